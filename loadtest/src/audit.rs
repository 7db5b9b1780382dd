//! The audit: after a run has drained, check every invariant of the design
//! against what the stock store, the database and the replay's own answers
//! say — each as pass or fail, with the counts.
//!
//! 1. **No oversell** — per item, live orders in the database ≤ the item's
//!    stock, and the store never went below zero.
//! 2. **One purchase per user per item** — no two live orders share (item,
//!    user) in the database, and the answers never gave one user two
//!    different order ids for an item.
//! 3. **Conservation** — stock left in the store + live orders == the
//!    item's stock (cancelled orders gave theirs back), and the store's
//!    reservations are exactly the live orders.
//! 4. **Every `queued` answer is exactly one order row, and every row was
//!    answered `queued`** — nothing acknowledged was lost, nothing was
//!    invented.
//!
//! The checks are pure functions of an [`AuditInput`], so each can be
//! shown to catch its violation in a fixture; collecting the input from a
//! live system is separate.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// An order row as the database has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderFact {
    /// Order id.
    pub order_id: String,
    /// Buyer.
    pub user: String,
    /// `created`, `paid` or `cancelled`.
    pub status: String,
}

/// One item, as the store and the database see it after the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemFacts {
    /// Item.
    pub item: String,
    /// Its stock (as the activity says, restocks included).
    pub stock: i64,
    /// Units left in the store.
    pub store_stock_left: i64,
    /// The store's reservations: user → order id.
    pub store_reservations: BTreeMap<String, String>,
    /// Every order row of the item.
    pub orders: Vec<OrderFact>,
}

/// A `queued` answer the replay received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueuedAnswer {
    /// Order id answered.
    pub order_id: String,
    /// Buyer.
    pub user: String,
    /// Item.
    pub item: String,
}

/// Everything the audit looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditInput {
    /// The items sold in the run.
    pub items: Vec<ItemFacts>,
    /// Every `queued` (and `duplicate`) answer, with its order id.
    pub answers: Vec<QueuedAnswer>,
}

/// One invariant's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Which invariant.
    pub name: String,
    /// Whether it holds.
    pub passed: bool,
    /// The counts behind the verdict, and the first offenders if any.
    pub detail: String,
}

/// Every invariant's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    /// In invariant order.
    pub checks: Vec<Check>,
}

impl AuditReport {
    /// Whether every invariant holds.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

/// At most this many offenders are named in a detail.
const SHOWN: usize = 5;

fn offenders(list: &[String]) -> String {
    let mut shown: Vec<&str> = list.iter().take(SHOWN).map(String::as_str).collect();
    if list.len() > SHOWN {
        shown.push("…");
    }
    shown.join(", ")
}

fn live(order: &OrderFact) -> bool {
    order.status != "cancelled"
}

/// Runs every check.
pub fn audit(input: &AuditInput) -> AuditReport {
    AuditReport {
        checks: vec![
            no_oversell(input),
            one_per_user(input),
            conservation(input),
            answers_match_rows(input),
        ],
    }
}

fn no_oversell(input: &AuditInput) -> Check {
    let mut bad = Vec::new();
    let mut sold = 0;
    for item in &input.items {
        let live_orders = item.orders.iter().filter(|o| live(o)).count() as i64;
        sold += live_orders;
        if live_orders > item.stock || item.store_stock_left < 0 {
            bad.push(format!(
                "{}: {live_orders} live orders for {} units, {} left in the store",
                item.item, item.stock, item.store_stock_left
            ));
        }
    }
    Check {
        name: "no oversell".into(),
        passed: bad.is_empty(),
        detail: if bad.is_empty() {
            format!(
                "{sold} live orders across {} items, none past its stock",
                input.items.len()
            )
        } else {
            offenders(&bad)
        },
    }
}

fn one_per_user(input: &AuditInput) -> Check {
    let mut bad = Vec::new();
    let mut pairs = 0;
    for item in &input.items {
        let mut seen = BTreeSet::new();
        for order in item.orders.iter().filter(|o| live(o)) {
            pairs += 1;
            if !seen.insert(order.user.as_str()) {
                bad.push(format!("{}/{}: two live orders", item.item, order.user));
            }
        }
    }
    // The answers: one order id per (item, user), unless an order was
    // cancelled and the user bought again (then each id has its own row).
    let cancelled: BTreeSet<&str> = input
        .items
        .iter()
        .flat_map(|i| {
            i.orders
                .iter()
                .filter(|o| !live(o))
                .map(|o| o.order_id.as_str())
        })
        .collect();
    let mut answered: HashMap<(&str, &str), BTreeSet<&str>> = HashMap::new();
    for answer in &input.answers {
        answered
            .entry((answer.item.as_str(), answer.user.as_str()))
            .or_default()
            .insert(answer.order_id.as_str());
    }
    for ((item, user), ids) in &answered {
        let open = ids.iter().filter(|id| !cancelled.contains(**id)).count();
        if open > 1 {
            bad.push(format!(
                "{item}/{user}: answered {open} different live order ids"
            ));
        }
    }
    bad.sort();
    Check {
        name: "one purchase per user per item".into(),
        passed: bad.is_empty(),
        detail: if bad.is_empty() {
            format!("{pairs} live (item, user) pairs, all distinct")
        } else {
            offenders(&bad)
        },
    }
}

fn conservation(input: &AuditInput) -> Check {
    let mut bad = Vec::new();
    for item in &input.items {
        let live_orders: BTreeMap<&str, &str> = item
            .orders
            .iter()
            .filter(|o| live(o))
            .map(|o| (o.user.as_str(), o.order_id.as_str()))
            .collect();
        let total = item.store_stock_left + live_orders.len() as i64;
        if total != item.stock {
            bad.push(format!(
                "{}: {} left + {} live orders = {total}, not {}",
                item.item,
                item.store_stock_left,
                live_orders.len(),
                item.stock
            ));
        }
        let reserved: BTreeMap<&str, &str> = item
            .store_reservations
            .iter()
            .map(|(u, o)| (u.as_str(), o.as_str()))
            .collect();
        if reserved != live_orders {
            let leaked = reserved
                .iter()
                .filter(|(u, o)| live_orders.get(*u) != Some(*o))
                .count();
            let unbacked = live_orders
                .iter()
                .filter(|(u, o)| reserved.get(*u) != Some(*o))
                .count();
            bad.push(format!(
                "{}: {leaked} reservations without their live order, {unbacked} live orders without their reservation",
                item.item
            ));
        }
    }
    Check {
        name: "conservation".into(),
        passed: bad.is_empty(),
        detail: if bad.is_empty() {
            "stock left + live orders == stock, and reservations == live orders, for every item"
                .into()
        } else {
            offenders(&bad)
        },
    }
}

fn answers_match_rows(input: &AuditInput) -> Check {
    let mut rows: HashMap<&str, usize> = HashMap::new();
    for order in input.items.iter().flat_map(|i| &i.orders) {
        *rows.entry(order.order_id.as_str()).or_default() += 1;
    }
    let answered: BTreeSet<&str> = input.answers.iter().map(|a| a.order_id.as_str()).collect();
    let mut missing = Vec::new();
    let mut doubled = Vec::new();
    for id in &answered {
        match rows.get(id) {
            None => missing.push((*id).to_owned()),
            Some(n) if *n > 1 => doubled.push((*id).to_owned()),
            Some(_) => {}
        }
    }
    let mut unanswered: Vec<String> = rows
        .keys()
        .filter(|id| !answered.contains(**id))
        .map(|id| (*id).to_owned())
        .collect();
    unanswered.sort();
    let passed = missing.is_empty() && doubled.is_empty() && unanswered.is_empty();
    let detail = if passed {
        format!(
            "{} queued answers, {} rows, one to one",
            answered.len(),
            rows.len()
        )
    } else {
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!(
                "{} answered but no row: {}",
                missing.len(),
                offenders(&missing)
            ));
        }
        if !doubled.is_empty() {
            parts.push(format!(
                "{} with several rows: {}",
                doubled.len(),
                offenders(&doubled)
            ));
        }
        if !unanswered.is_empty() {
            parts.push(format!(
                "{} rows never answered queued: {}",
                unanswered.len(),
                offenders(&unanswered)
            ));
        }
        parts.join("; ")
    };
    Check {
        name: "every queued answer is exactly one row".into(),
        passed,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str, user: &str, status: &str) -> OrderFact {
        OrderFact {
            order_id: id.into(),
            user: user.into(),
            status: status.into(),
        }
    }

    fn answer(id: &str, user: &str) -> QueuedAnswer {
        QueuedAnswer {
            order_id: id.into(),
            user: user.into(),
            item: "sku".into(),
        }
    }

    /// A clean run: stock 3; u1 and u2 bought, u3 bought and cancelled
    /// (its unit came back), u4 bought the returned unit.
    fn clean() -> AuditInput {
        AuditInput {
            items: vec![ItemFacts {
                item: "sku".into(),
                stock: 3,
                store_stock_left: 0,
                store_reservations: [("u1", "o1"), ("u2", "o2"), ("u4", "o4")]
                    .into_iter()
                    .map(|(u, o)| (u.to_owned(), o.to_owned()))
                    .collect(),
                orders: vec![
                    order("o1", "u1", "paid"),
                    order("o2", "u2", "created"),
                    order("o3", "u3", "cancelled"),
                    order("o4", "u4", "created"),
                ],
            }],
            answers: vec![
                answer("o1", "u1"),
                answer("o1", "u1"), // a duplicate click, same id
                answer("o2", "u2"),
                answer("o3", "u3"),
                answer("o4", "u4"),
            ],
        }
    }

    fn failed(input: &AuditInput) -> Vec<String> {
        audit(input)
            .checks
            .into_iter()
            .filter(|c| !c.passed)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn a_clean_run_passes_every_check() {
        let report = audit(&clean());
        assert!(report.passed(), "{report:#?}");
    }

    #[test]
    fn an_extra_row_is_caught() {
        let mut input = clean();
        input.items[0].orders.push(order("o9", "u9", "created"));
        let failures = failed(&input);
        assert!(failures.contains(&"every queued answer is exactly one row".to_owned()));
        assert!(failures.contains(&"no oversell".to_owned()));
        let detail = &audit(&input).checks[3].detail;
        assert!(detail.contains("o9"), "{detail}");
    }

    #[test]
    fn a_missing_row_is_caught() {
        let mut input = clean();
        input.answers.push(answer("o5", "u5"));
        assert_eq!(failed(&input), ["every queued answer is exactly one row"]);
        assert!(audit(&input).checks[3].detail.contains("no row: o5"));
    }

    #[test]
    fn a_duplicate_is_caught() {
        // Two live orders for one user, and two ids answered to them.
        let mut input = clean();
        input.items[0].stock = 4;
        input.items[0].orders.push(order("o5", "u1", "created"));
        input.answers.push(answer("o5", "u1"));
        let failures = failed(&input);
        assert!(
            failures.contains(&"one purchase per user per item".to_owned()),
            "{failures:?}"
        );
        assert!(audit(&input).checks[1].detail.contains("sku/u1"));
    }

    #[test]
    fn an_oversell_is_caught() {
        // The store went below zero and the database took a fourth order.
        let mut input = clean();
        input.items[0].store_stock_left = -1;
        input.items[0].orders.push(order("o5", "u5", "created"));
        input.answers.push(answer("o5", "u5"));
        input.items[0]
            .store_reservations
            .insert("u5".into(), "o5".into());
        let failures = failed(&input);
        assert!(failures.contains(&"no oversell".to_owned()), "{failures:?}");
    }

    #[test]
    fn a_leaked_reservation_is_caught() {
        // o4 cancelled in the database, but its unit never went back.
        let mut input = clean();
        input.items[0].orders[3].status = "cancelled".into();
        assert_eq!(failed(&input), ["conservation"]);
    }
}
