//! The stock store: typed calls over the Lua scripts, whichever store runs
//! them.
//!
//! [`ScriptRunner`] is the only thing a store implements — "run this script
//! with these keys and arguments" — so the decision logic lives once, in
//! `lua/`, and this module only names the outcomes.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::StockError;
use crate::reply::Reply;
use crate::scripts::{
    BUYERS, HOLDER, LuaScript, PREWARM, RELEASE, RESERVE, RESERVE_BATCH, RESTOCK, STATUS,
};
use crate::store_keys::{ItemKeys, flag_channel, validate_item_id};

/// The most purchases one [`StockStore::reserve_batch`] call decides: a
/// script runs alone, so one batch holds every other client of the store
/// for its length (about a millisecond at this size).
pub const MAX_BATCH: usize = 1024;

/// Runs a Lua script atomically: real Redis, or the embedded store.
#[async_trait]
pub trait ScriptRunner: Send + Sync + Debug {
    /// Runs `script` with `keys` and `args`; the whole script is one
    /// atomic step.
    async fn run(
        &self,
        script: &LuaScript,
        keys: &[String],
        args: &[String],
    ) -> Result<Reply, StockError>;
}

/// The outcome of one purchase attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved now; `stock_left` after this one.
    Queued {
        /// The new order's id.
        order_id: String,
        /// Units left.
        stock_left: i64,
        /// Sold-out flag version (raised if this was the last unit).
        flag_version: i64,
    },
    /// The user already holds an order for this item: this is its id.
    Duplicate {
        /// The existing order's id.
        order_id: String,
    },
    /// Nothing left.
    SoldOut {
        /// Current flag version.
        flag_version: i64,
    },
    /// The item was never pre-warmed into this store.
    NotWarmed,
    /// The purchase token was spent already: nothing was decided.
    Reused,
}

/// The outcome of giving a reservation back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The unit is back on sale.
    Released {
        /// Units left now.
        stock_left: i64,
        /// Flag version (raised if the item reopened).
        flag_version: i64,
    },
    /// The user does not hold that order (already released, or never).
    NotHeld,
}

/// The outcome of pre-warming an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prewarm {
    /// Stock loaded.
    Warmed {
        /// Units loaded.
        stock: i64,
    },
    /// Already warmed; unchanged.
    Exists {
        /// Units it has.
        stock: i64,
    },
}

/// The outcome of a restock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restock {
    /// Units added.
    Restocked {
        /// Units now.
        stock: i64,
        /// Flag version (raised if the item reopened).
        flag_version: i64,
    },
    /// The item was never warmed.
    NotWarmed,
}

/// An item's state in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemStatus {
    /// Warmed into this store.
    pub warmed: bool,
    /// Units left (-1 if not warmed).
    pub stock: i64,
    /// Users holding a reservation.
    pub buyers: i64,
    /// The sold-out flag is up.
    pub sold_out: bool,
    /// Flag version.
    pub flag_version: i64,
}

/// Typed access to one store's items.
#[derive(Debug, Clone)]
pub struct StockStore {
    runner: Arc<dyn ScriptRunner>,
    prefix: String,
    flag_channel: String,
}

impl StockStore {
    /// A store over `runner`, its keys under `prefix` (usually empty).
    pub fn new(runner: Arc<dyn ScriptRunner>, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        StockStore {
            runner,
            flag_channel: flag_channel(&prefix),
            prefix,
        }
    }

    /// The channel this store's scripts publish flag changes on (under
    /// the key prefix).
    pub fn flag_channel(&self) -> &str {
        &self.flag_channel
    }

    fn keys(&self, item: &str) -> Result<Vec<String>, StockError> {
        validate_item_id(item)?;
        Ok(ItemKeys::new(&self.prefix, item).to_vec())
    }

    /// One purchase attempt by `user`, recording `order_id` if it succeeds.
    pub async fn reserve(
        &self,
        item: &str,
        user: &str,
        order_id: &str,
    ) -> Result<Reservation, StockError> {
        self.reserve_spending(item, user, order_id, None).await
    }

    /// [`StockStore::reserve`], spending in the same atomic step the
    /// purchase token issued at `token_issued_us` (µs since the epoch):
    /// [`Reservation::Reused`] if the user spent that token, or a later
    /// one, on this item already (see `lua/reserve.lua`).
    pub async fn reserve_spending(
        &self,
        item: &str,
        user: &str,
        order_id: &str,
        token_issued_us: Option<u64>,
    ) -> Result<Reservation, StockError> {
        if user.is_empty() || order_id.is_empty() {
            return Err(StockError::Invalid(
                "user and order id must not be empty".into(),
            ));
        }
        let spent = token_issued_us.map(|t| t.to_string()).unwrap_or_default();
        let args = [user, order_id, item, &self.flag_channel, &spent].map(str::to_owned);
        let reply = self.runner.run(&RESERVE, &self.keys(item)?, &args).await?;
        Fields::of(&RESERVE, &reply, 4)?.reservation(0)
    }

    /// The purchases of a batch of `(user, order id)` for one item,
    /// decided in the order given as one atomic step, each exactly as
    /// [`StockStore::reserve`] would decide it at its turn (see
    /// `lua/reserve_batch.lua`). One answer per purchase, in order.
    pub async fn reserve_batch(
        &self,
        item: &str,
        purchases: &[(&str, &str)],
    ) -> Result<Vec<Reservation>, StockError> {
        let spending: Vec<(&str, &str, Option<u64>)> =
            purchases.iter().map(|(u, o)| (*u, *o, None)).collect();
        self.reserve_batch_spending(item, &spending).await
    }

    /// [`StockStore::reserve_batch`] of `(user, order id, purchase token
    /// issue time)`, each token spent as [`StockStore::reserve_spending`]
    /// spends it, at its turn.
    pub async fn reserve_batch_spending(
        &self,
        item: &str,
        purchases: &[(&str, &str, Option<u64>)],
    ) -> Result<Vec<Reservation>, StockError> {
        if purchases.is_empty() || purchases.len() > MAX_BATCH {
            return Err(StockError::Invalid(format!(
                "a batch holds 1 to {MAX_BATCH} purchases, not {}",
                purchases.len()
            )));
        }
        let mut args = Vec::with_capacity(2 + 3 * purchases.len());
        args.push(item.to_owned());
        args.push(self.flag_channel.clone());
        for (user, order_id, token_issued_us) in purchases {
            if user.is_empty() || order_id.is_empty() {
                return Err(StockError::Invalid(
                    "user and order id must not be empty".into(),
                ));
            }
            // Answers come back one per line, a held order id among them.
            if order_id.contains('\n') {
                return Err(StockError::Invalid(
                    "an order id must not contain a line break".into(),
                ));
            }
            args.push((*user).to_owned());
            args.push((*order_id).to_owned());
            args.push(token_issued_us.map(|t| t.to_string()).unwrap_or_default());
        }
        let reply = self
            .runner
            .run(&RESERVE_BATCH, &self.keys(item)?, &args)
            .await?;
        batch_reservations(&reply, purchases.iter().map(|(_, order_id, _)| *order_id))
    }

    /// Gives back `user`'s reservation `order_id` (idempotent).
    pub async fn release(
        &self,
        item: &str,
        user: &str,
        order_id: &str,
    ) -> Result<Release, StockError> {
        let args = [user, order_id, item, &self.flag_channel].map(str::to_owned);
        let reply = self.runner.run(&RELEASE, &self.keys(item)?, &args).await?;
        let fields = Fields::of(&RELEASE, &reply, 3)?;
        Ok(match fields.text(0)? {
            "released" => Release::Released {
                stock_left: fields.int(1)?,
                flag_version: fields.int(2)?,
            },
            "not_held" => Release::NotHeld,
            _ => return Err(fields.unexpected()),
        })
    }

    /// Loads `stock` units for `item` unless it is already warmed.
    pub async fn prewarm(&self, item: &str, stock: u64) -> Result<Prewarm, StockError> {
        let args = [
            stock.to_string(),
            item.to_owned(),
            self.flag_channel.clone(),
        ];
        let reply = self.runner.run(&PREWARM, &self.keys(item)?, &args).await?;
        let fields = Fields::of(&PREWARM, &reply, 3)?;
        Ok(match fields.text(0)? {
            "warmed" => Prewarm::Warmed {
                stock: fields.int(1)?,
            },
            "exists" => Prewarm::Exists {
                stock: fields.int(1)?,
            },
            "invalid" => return Err(StockError::Invalid(format!("stock {stock} is not valid"))),
            _ => return Err(fields.unexpected()),
        })
    }

    /// Adds `units` (at least 1) to a warmed item.
    pub async fn restock(&self, item: &str, units: u64) -> Result<Restock, StockError> {
        if units == 0 {
            return Err(StockError::Invalid(
                "a restock adds at least one unit".into(),
            ));
        }
        let args = [
            units.to_string(),
            item.to_owned(),
            self.flag_channel.clone(),
        ];
        let reply = self.runner.run(&RESTOCK, &self.keys(item)?, &args).await?;
        let fields = Fields::of(&RESTOCK, &reply, 3)?;
        Ok(match fields.text(0)? {
            "restocked" => Restock::Restocked {
                stock: fields.int(1)?,
                flag_version: fields.int(2)?,
            },
            "not_warmed" => Restock::NotWarmed,
            _ => return Err(fields.unexpected()),
        })
    }

    /// Reads an item's state.
    pub async fn status(&self, item: &str) -> Result<ItemStatus, StockError> {
        let reply = self.runner.run(&STATUS, &self.keys(item)?, &[]).await?;
        let fields = Fields::of(&STATUS, &reply, 5)?;
        Ok(ItemStatus {
            warmed: match fields.text(0)? {
                "warmed" => true,
                "not_warmed" => false,
                _ => return Err(fields.unexpected()),
            },
            stock: fields.int(1)?,
            buyers: fields.int(2)?,
            sold_out: fields.int(3)? == 1,
            flag_version: fields.int(4)?,
        })
    }

    /// The order `user` holds for `item`, if any.
    pub async fn holder(&self, item: &str, user: &str) -> Result<Option<String>, StockError> {
        let reply = self
            .runner
            .run(&HOLDER, &self.keys(item)?, &[user.to_owned()])
            .await?;
        match reply {
            Reply::Nil => Ok(None),
            Reply::Bulk(order_id) => Ok(Some(order_id)),
            other => Err(StockError::UnexpectedReply {
                script: HOLDER.name,
                reply: format!("{other:?}"),
            }),
        }
    }

    /// Every reservation of `item`: (user, order id), sorted by user.
    pub async fn buyers(&self, item: &str) -> Result<Vec<(String, String)>, StockError> {
        let reply = self.runner.run(&BUYERS, &self.keys(item)?, &[]).await?;
        let unexpected = |reply: &Reply| StockError::UnexpectedReply {
            script: BUYERS.name,
            reply: format!("{reply:?}"),
        };
        let Reply::Array(values) = &reply else {
            return Err(unexpected(&reply));
        };
        if values.len() % 2 != 0 {
            return Err(unexpected(&reply));
        }
        let mut pairs = Vec::with_capacity(values.len() / 2);
        for pair in values.chunks(2) {
            match pair {
                [Reply::Bulk(user), Reply::Bulk(order_id)] => {
                    pairs.push((user.clone(), order_id.clone()));
                }
                _ => return Err(unexpected(&reply)),
            }
        }
        pairs.sort_unstable();
        Ok(pairs)
    }

    /// The runner underneath (for tests comparing raw replies).
    pub fn runner(&self) -> &Arc<dyn ScriptRunner> {
        &self.runner
    }
}

/// Reads `reserve_batch.lua`'s answer lines, one per purchase in order.
fn batch_reservations<'a>(
    reply: &Reply,
    order_ids: impl ExactSizeIterator<Item = &'a str>,
) -> Result<Vec<Reservation>, StockError> {
    let unexpected = || StockError::UnexpectedReply {
        script: RESERVE_BATCH.name,
        reply: format!("{reply:?}"),
    };
    let Reply::Bulk(text) = reply else {
        return Err(unexpected());
    };
    let int = |field: Option<&str>| -> Result<i64, StockError> {
        field.and_then(|f| f.parse().ok()).ok_or_else(unexpected)
    };
    let mut reservations = Vec::with_capacity(order_ids.len());
    let mut lines = text.split('\n');
    for order_id in order_ids {
        let line = lines.next().ok_or_else(unexpected)?;
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        reservations.push(match kind {
            "q" => {
                let mut fields = rest.split(' ');
                let reservation = Reservation::Queued {
                    order_id: order_id.to_owned(),
                    stock_left: int(fields.next())?,
                    flag_version: int(fields.next())?,
                };
                if fields.next().is_some() {
                    return Err(unexpected());
                }
                reservation
            }
            "d" if !rest.is_empty() => Reservation::Duplicate {
                order_id: rest.to_owned(),
            },
            "s" => Reservation::SoldOut {
                flag_version: int(Some(rest))?,
            },
            "n" if rest.is_empty() => Reservation::NotWarmed,
            "r" if rest.is_empty() => Reservation::Reused,
            _ => return Err(unexpected()),
        });
    }
    if lines.next().is_some() {
        return Err(unexpected());
    }
    Ok(reservations)
}

/// Positional reading of a script's array reply.
struct Fields<'a> {
    script: &'static str,
    reply: &'a Reply,
    items: &'a [Reply],
}

impl<'a> Fields<'a> {
    fn of(script: &LuaScript, reply: &'a Reply, len: usize) -> Result<Self, StockError> {
        match reply {
            Reply::Array(items) if items.len() == len => Ok(Fields {
                script: script.name,
                reply,
                items,
            }),
            _ => Err(StockError::UnexpectedReply {
                script: script.name,
                reply: format!("{reply:?}"),
            }),
        }
    }

    /// A reserve answer (status, order id, stock left, flag version)
    /// starting at field `at`.
    fn reservation(&self, at: usize) -> Result<Reservation, StockError> {
        Ok(match self.text(at)? {
            "queued" => Reservation::Queued {
                order_id: self.text(at + 1)?.to_owned(),
                stock_left: self.int(at + 2)?,
                flag_version: self.int(at + 3)?,
            },
            "duplicate" => Reservation::Duplicate {
                order_id: self.text(at + 1)?.to_owned(),
            },
            "sold_out" => Reservation::SoldOut {
                flag_version: self.int(at + 3)?,
            },
            "not_warmed" => Reservation::NotWarmed,
            "reused" => Reservation::Reused,
            _ => return Err(self.unexpected()),
        })
    }

    fn unexpected(&self) -> StockError {
        StockError::UnexpectedReply {
            script: self.script,
            reply: format!("{:?}", self.reply),
        }
    }

    fn text(&self, i: usize) -> Result<&'a str, StockError> {
        match &self.items[i] {
            Reply::Bulk(s) => Ok(s),
            _ => Err(self.unexpected()),
        }
    }

    fn int(&self, i: usize) -> Result<i64, StockError> {
        match &self.items[i] {
            Reply::Int(n) => Ok(*n),
            _ => Err(self.unexpected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PURCHASES: [&str; 5] = ["o1", "o2", "o3", "o4", "o5"];

    #[test]
    fn a_batch_reply_reads_one_answer_per_line_in_order() {
        let reply = Reply::Bulk("q 9 0\nd o0\ns 3\nn\nr".into());
        assert_eq!(
            batch_reservations(&reply, PURCHASES.into_iter()).unwrap(),
            [
                Reservation::Queued {
                    order_id: "o1".into(),
                    stock_left: 9,
                    flag_version: 0
                },
                Reservation::Duplicate {
                    order_id: "o0".into()
                },
                Reservation::SoldOut { flag_version: 3 },
                Reservation::NotWarmed,
                Reservation::Reused,
            ]
        );
    }

    #[test]
    fn a_batch_reply_of_the_wrong_shape_is_an_error() {
        for bad in [
            "q 9 0\nd o0\ns 3\nn",       // an answer short
            "q 9 0\nd o0\ns 3\nn\nr\nn", // one too many
            "q 9\nd o0\ns 3\nn\nr",      // a field short
            "q 9 0 1\nd o0\ns 3\nn\nr",  // a field too many
            "q x 0\nd o0\ns 3\nn\nr",    // not a number
            "x 9 0\nd o0\ns 3\nn\nr",    // unknown answer
            "q 9 0\nd\ns 3\nn\nr",       // a duplicate without its order
            "q 9 0\nd o0\ns 3\nn\nr x",  // a reuse with a field
        ] {
            let error =
                batch_reservations(&Reply::Bulk(bad.into()), PURCHASES.into_iter()).unwrap_err();
            assert!(
                matches!(error, StockError::UnexpectedReply { .. }),
                "{bad:?}: {error:?}"
            );
        }
        let array = Reply::Array(vec![Reply::Bulk("queued".into())]);
        assert!(batch_reservations(&array, PURCHASES[..1].iter().copied()).is_err());
    }
}
