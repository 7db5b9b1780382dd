//! Consumer groups: who is consuming, and which queues each member owns.
//!
//! Two modes, as in RocketMQ:
//! - **Clustering** — every message is consumed once per group. The queues
//!   of each subscribed topic are split over the live members with
//!   RocketMQ's "allocate averagely" rule (sorted members, contiguous runs of
//!   sorted queues, the first `queues % members` members get one extra), and
//!   offsets belong to the group.
//! - **Broadcasting** — every member consumes every queue, with an offset of
//!   its own (`group%member`).
//!
//! Members heartbeat; a member silent for `member_expiry` is dropped, which
//! — like a join or a leave — bumps the group's generation so members can
//! tell their assignment changed. Expiry is evaluated on every group call
//! (no timer thread), using tokio's clock so tests can pause time.
//!
//! Generations come from one counter for the whole registry, so they never
//! repeat, not even for a group that went away and came back.
//!
//! A group whose last member leaves or expires is removed, so the registry
//! holds only groups that are consuming; its committed offsets stay (in
//! `offsets.rs`), so a group that is empty for a while — every worker
//! restarting — resumes where it was.
//!
//! **Fencing.** A member learns that it lost a queue only at its next
//! heartbeat, so for a while two members may consume the same queue. The
//! registry therefore keeps, for every queue of a clustering group, who owns
//! it now and since which generation; a commit names the member and the
//! generation of the assignment it consumed under, and is accepted only if
//! that member owns the queue now and has owned it without a break since
//! that generation ([`GroupRegistry::check_owner`]). A member that lost a
//! queue and got it back later is fenced too: its old task's generation is
//! older than the new ownership. An offset reset renews every ownership, so
//! tasks that read their offset before the reset cannot overwrite it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::error::{BrokerError, Result};
use crate::types::{Assignment, ConsumeMode, JoinRequest, QueueRef};

#[derive(Debug)]
struct Member {
    topics: BTreeSet<String>,
    last_seen: Instant,
}

#[derive(Debug)]
struct Group {
    mode: ConsumeMode,
    generation: u64,
    members: BTreeMap<String, Member>,
    /// Queue counts of the subscribed topics, as last seen at a join or
    /// heartbeat (a topic's queue count never changes).
    queue_counts: BTreeMap<String, u32>,
    /// Clustering mode: the owner of each queue and the generation since
    /// which it has owned it without a break.
    owners: HashMap<QueueRef, (String, u64)>,
}

impl Group {
    /// Moves to a new generation and recomputes who owns which queue; an
    /// owner that keeps its queue keeps its `since`.
    fn bump(&mut self, generation: &mut u64) {
        *generation += 1;
        self.generation = *generation;
        let mut owners = HashMap::new();
        if self.mode == ConsumeMode::Clustering {
            for (topic, count) in &self.queue_counts {
                let consumers: Vec<&String> = self
                    .members
                    .iter()
                    .filter(|(_, m)| m.topics.contains(topic))
                    .map(|(id, _)| id)
                    .collect();
                if consumers.is_empty() {
                    continue;
                }
                let all: Vec<u32> = (0..*count).collect();
                for (index, member) in consumers.iter().enumerate() {
                    for &queue_id in allocate_averagely(&all, consumers.len(), index) {
                        let queue = QueueRef {
                            topic: topic.clone(),
                            queue_id,
                        };
                        let since = match self.owners.get(&queue) {
                            Some((owner, since)) if owner == *member => *since,
                            _ => self.generation,
                        };
                        owners.insert(queue, ((*member).clone(), since));
                    }
                }
            }
        }
        self.owners = owners;
    }
}

#[derive(Debug, Default)]
struct State {
    groups: HashMap<String, Group>,
    /// The last generation handed out, to any group.
    generation: u64,
}

#[derive(Debug)]
pub(crate) struct GroupRegistry {
    expiry: Duration,
    state: Mutex<State>,
}

impl GroupRegistry {
    pub(crate) fn new(expiry: Duration) -> Self {
        GroupRegistry {
            expiry,
            state: Mutex::new(State::default()),
        }
    }

    /// Adds (or refreshes) a member. `queue_count` tells how many queues a
    /// topic has (`None` = unknown topic, which is an error).
    pub(crate) fn join(
        &self,
        request: &JoinRequest,
        queue_count: impl Fn(&str) -> Option<u32>,
    ) -> Result<Assignment> {
        if request.group.is_empty() || request.member.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "group and member must not be empty".into(),
            ));
        }
        if request.topics.is_empty() {
            return Err(BrokerError::InvalidArgument(
                "a member must subscribe to at least one topic".into(),
            ));
        }
        for topic in &request.topics {
            if queue_count(topic).is_none() {
                return Err(BrokerError::TopicNotFound(topic.clone()));
            }
        }
        let now = Instant::now();
        let mut state = self.state.lock();
        let State { groups, generation } = &mut *state;
        let group = groups
            .entry(request.group.clone())
            .or_insert_with(|| Group {
                mode: request.mode,
                generation: 0,
                members: BTreeMap::new(),
                queue_counts: BTreeMap::new(),
                owners: HashMap::new(),
            });
        self.expire(group, now, generation);
        if group.members.is_empty() {
            group.mode = request.mode;
        }
        if group.mode != request.mode {
            return Err(BrokerError::GroupModeConflict {
                group: request.group.clone(),
                existing: group.mode.name(),
                requested: request.mode.name(),
            });
        }
        let topics: BTreeSet<String> = request.topics.iter().cloned().collect();
        for topic in &topics {
            if let Some(count) = queue_count(topic) {
                group.queue_counts.insert(topic.clone(), count);
            }
        }
        let changed = group
            .members
            .get(&request.member)
            .is_none_or(|m| m.topics != topics);
        group.members.insert(
            request.member.clone(),
            Member {
                topics,
                last_seen: now,
            },
        );
        if changed {
            group.bump(generation);
        }
        Ok(assign(&request.group, group, &request.member, &queue_count))
    }

    /// Refreshes a member and returns its current assignment.
    pub(crate) fn heartbeat(
        &self,
        group_name: &str,
        member: &str,
        queue_count: impl Fn(&str) -> Option<u32>,
    ) -> Result<Assignment> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let State { groups, generation } = &mut *state;
        let unknown = || BrokerError::UnknownMember {
            group: group_name.to_owned(),
            member: member.to_owned(),
        };
        let group = groups.get_mut(group_name).ok_or_else(unknown)?;
        self.expire(group, now, generation);
        if group.members.is_empty() {
            groups.remove(group_name);
            return Err(unknown());
        }
        let group = groups.get_mut(group_name).ok_or_else(unknown)?;
        let entry = group.members.get_mut(member).ok_or_else(unknown)?;
        entry.last_seen = now;
        Ok(assign(group_name, group, member, &queue_count))
    }

    /// Removes a member; its queues go to the others at their next
    /// heartbeat. The last member's leave removes the group.
    pub(crate) fn leave(&self, group_name: &str, member: &str) -> Result<()> {
        let mut state = self.state.lock();
        let State { groups, generation } = &mut *state;
        let removed = groups
            .get_mut(group_name)
            .and_then(|group| {
                group.members.remove(member).map(|_| {
                    group.bump(generation);
                })
            })
            .is_some();
        if groups.get(group_name).is_some_and(|g| g.members.is_empty()) {
            groups.remove(group_name);
        }
        if removed {
            Ok(())
        } else {
            Err(BrokerError::UnknownMember {
                group: group_name.to_owned(),
                member: member.to_owned(),
            })
        }
    }

    /// Runs `reset` (an offset reset of the group) with the registry
    /// locked, then tells the group's members: the generation moves on and
    /// every ownership starts anew at it, so a commit from a task that read
    /// its offset before the reset is fenced. Holding the lock keeps every
    /// fenced commit either before the reset or after the new generation.
    pub(crate) fn reset_under_lock<T>(
        &self,
        group_name: &str,
        reset: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let mut state = self.state.lock();
        let result = reset();
        let State { groups, generation } = &mut *state;
        if let Some(group) = groups.get_mut(group_name) {
            group.owners.clear();
            group.bump(generation);
        }
        result
    }

    /// Runs `commit` if `member` of clustering group `group_name` owns
    /// `topic`/`queue_id` now and has owned it without a break since
    /// `generation` (the generation of the assignment it consumes under).
    /// The registry stays locked while `commit` runs, so no rebalance slips
    /// between the check and the write.
    pub(crate) fn check_owner<T>(
        &self,
        group_name: &str,
        member: &str,
        generation: u64,
        queue: &QueueRef,
        commit: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let State {
            groups,
            generation: last,
        } = &mut *state;
        let unknown = || BrokerError::UnknownMember {
            group: group_name.to_owned(),
            member: member.to_owned(),
        };
        let group = groups.get_mut(group_name).ok_or_else(unknown)?;
        self.expire(group, now, last);
        if group.members.is_empty() {
            groups.remove(group_name);
            return Err(unknown());
        }
        let group = groups.get_mut(group_name).ok_or_else(unknown)?;
        if !group.members.contains_key(member) {
            return Err(unknown());
        }
        if group.mode != ConsumeMode::Clustering {
            return Err(BrokerError::InvalidArgument(format!(
                "group {group_name:?} consumes in broadcasting mode: commit under the member's \
                 own offset owner, without a member to fence"
            )));
        }
        let fenced = |why: String| {
            BrokerError::Fenced(format!(
                "member {member:?} of group {group_name:?} may not commit {}/{}: {why}",
                queue.topic, queue.queue_id
            ))
        };
        match group.owners.get(queue) {
            None => Err(fenced("no member owns that queue".into())),
            Some((owner, _)) if owner != member => {
                Err(fenced(format!("it belongs to {owner:?} now")))
            }
            Some((_, since)) if *since > generation => Err(fenced(format!(
                "the commit is from generation {generation}, but the member has owned the \
                 queue only since generation {since}"
            ))),
            Some(_) => commit(),
        }
    }

    /// Whether `group_name` is a clustering group with live members: its
    /// offsets take fenced commits only.
    pub(crate) fn is_live_clustering(&self, group_name: &str) -> bool {
        let now = Instant::now();
        let mut state = self.state.lock();
        let State { groups, generation } = &mut *state;
        let Some(group) = groups.get_mut(group_name) else {
            return false;
        };
        self.expire(group, now, generation);
        if group.members.is_empty() {
            groups.remove(group_name);
            return false;
        }
        group.mode == ConsumeMode::Clustering
    }

    /// Groups with their mode and live members (for stats). Groups left
    /// without members are removed here too.
    pub(crate) fn snapshot(&self) -> Vec<(String, ConsumeMode, Vec<String>)> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let State { groups, generation } = &mut *state;
        for group in groups.values_mut() {
            self.expire(group, now, generation);
        }
        groups.retain(|_, group| !group.members.is_empty());
        let mut out: Vec<_> = groups
            .iter_mut()
            .map(|(name, group)| {
                (
                    name.clone(),
                    group.mode,
                    group.members.keys().cloned().collect(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn expire(&self, group: &mut Group, now: Instant, generation: &mut u64) {
        let before = group.members.len();
        group
            .members
            .retain(|_, m| now.saturating_duration_since(m.last_seen) < self.expiry);
        if group.members.len() != before {
            group.bump(generation);
        }
    }
}

fn assign(
    group_name: &str,
    group: &Group,
    member: &str,
    queue_count: &impl Fn(&str) -> Option<u32>,
) -> Assignment {
    let mut queues = Vec::new();
    let subscribed = group
        .members
        .get(member)
        .map(|m| m.topics.clone())
        .unwrap_or_default();
    for topic in &subscribed {
        let Some(count) = queue_count(topic) else {
            continue;
        };
        let all: Vec<u32> = (0..count).collect();
        let ids = match group.mode {
            ConsumeMode::Broadcasting => all,
            ConsumeMode::Clustering => {
                let consumers: Vec<&String> = group
                    .members
                    .iter()
                    .filter(|(_, m)| m.topics.contains(topic))
                    .map(|(id, _)| id)
                    .collect();
                let index = consumers
                    .iter()
                    .position(|id| *id == member)
                    .expect("member subscribes");
                allocate_averagely(&all, consumers.len(), index).to_vec()
            }
        };
        queues.extend(ids.into_iter().map(|queue_id| QueueRef {
            topic: topic.clone(),
            queue_id,
        }));
    }
    Assignment {
        generation: group.generation,
        mode: group.mode,
        offset_owner: group.mode.offset_owner(group_name, member),
        queues,
        members: group.members.keys().cloned().collect(),
    }
}

/// RocketMQ's `AllocateMessageQueueAveragely`: member `index` of `members`
/// gets a contiguous run of `queues`; the first `len % members` members get
/// one more than the rest, and with more members than queues the extra
/// members get none.
pub fn allocate_averagely<T>(queues: &[T], members: usize, index: usize) -> &[T] {
    assert!(index < members, "member index {index} out of {members}");
    let len = queues.len();
    let remainder = len % members;
    let size = if len <= members {
        usize::from(index < len)
    } else if index < remainder {
        len / members + 1
    } else {
        len / members
    };
    let start = if remainder > 0 && index < remainder {
        index * size
    } else {
        index * size + remainder
    };
    let start = start.min(len);
    &queues[start..(start + size).min(len)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averaging_gives_every_queue_to_exactly_one_member() {
        for queues in 0..20usize {
            let all: Vec<usize> = (0..queues).collect();
            for members in 1..12 {
                let mut seen = Vec::new();
                let mut sizes = Vec::new();
                for index in 0..members {
                    let part = allocate_averagely(&all, members, index);
                    sizes.push(part.len());
                    seen.extend_from_slice(part);
                }
                assert_eq!(seen, all, "{queues} queues over {members} members");
                let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(max - min <= 1, "uneven split {sizes:?}");
            }
        }
    }

    fn join(registry: &GroupRegistry, member: &str, mode: ConsumeMode) -> Result<Assignment> {
        registry.join(
            &JoinRequest {
                group: "g".into(),
                member: member.into(),
                mode,
                topics: vec!["orders".into()],
            },
            |t| (t == "orders").then_some(8),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn members_rebalance_on_join_leave_and_expiry() {
        let registry = GroupRegistry::new(Duration::from_secs(30));
        let counts = |t: &str| (t == "orders").then_some(8);
        assert_eq!(
            join(&registry, "a", ConsumeMode::Clustering)
                .unwrap()
                .queues
                .len(),
            8
        );
        join(&registry, "b", ConsumeMode::Clustering).unwrap();
        let a = registry.heartbeat("g", "a", counts).unwrap();
        let b = registry.heartbeat("g", "b", counts).unwrap();
        assert_eq!((a.queues.len(), b.queues.len()), (4, 4));
        assert!(a.queues.iter().all(|q| !b.queues.contains(q)));

        // b goes silent; a keeps heartbeating and inherits b's queues.
        tokio::time::advance(Duration::from_secs(20)).await;
        registry.heartbeat("g", "a", counts).unwrap();
        tokio::time::advance(Duration::from_secs(11)).await;
        let a = registry.heartbeat("g", "a", counts).unwrap();
        assert_eq!(a.queues.len(), 8);
        assert_eq!(a.members, vec!["a".to_string()]);
        assert!(matches!(
            registry.heartbeat("g", "b", counts),
            Err(BrokerError::UnknownMember { .. })
        ));

        join(&registry, "c", ConsumeMode::Clustering).unwrap();
        registry.leave("g", "c").unwrap();
        assert_eq!(
            registry.heartbeat("g", "a", counts).unwrap().queues.len(),
            8
        );
    }

    #[tokio::test]
    async fn broadcasting_gives_everyone_everything_and_modes_cannot_mix() {
        let registry = GroupRegistry::new(Duration::from_secs(30));
        let a = join(&registry, "a", ConsumeMode::Broadcasting).unwrap();
        let b = join(&registry, "b", ConsumeMode::Broadcasting).unwrap();
        assert_eq!((a.queues.len(), b.queues.len()), (8, 8));
        assert_eq!(b.offset_owner, "g%b");
        assert!(matches!(
            join(&registry, "c", ConsumeMode::Clustering),
            Err(BrokerError::GroupModeConflict { .. })
        ));
        assert!(matches!(
            registry.join(
                &JoinRequest {
                    group: "g".into(),
                    member: "d".into(),
                    mode: ConsumeMode::Broadcasting,
                    topics: vec!["nope".into()],
                },
                |t| (t == "orders").then_some(8),
            ),
            Err(BrokerError::TopicNotFound(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn issue_8_a_group_whose_last_member_leaves_or_expires_is_removed() {
        let registry = GroupRegistry::new(Duration::from_secs(30));
        let counts = |t: &str| (t == "orders").then_some(8);
        join(&registry, "a", ConsumeMode::Clustering).unwrap();
        join(&registry, "b", ConsumeMode::Clustering).unwrap();
        registry.leave("g", "a").unwrap();
        assert_eq!(registry.snapshot().len(), 1, "b is still there");
        registry.leave("g", "b").unwrap();
        assert!(registry.snapshot().is_empty(), "{:?}", registry.snapshot());
        assert!(registry.state.lock().groups.is_empty());

        // Expiry: the silent member goes, and its group with it, whichever
        // call notices first.
        let before = join(&registry, "a", ConsumeMode::Clustering).unwrap();
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(registry.snapshot().is_empty());
        assert!(registry.state.lock().groups.is_empty());
        join(&registry, "a", ConsumeMode::Clustering).unwrap();
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(matches!(
            registry.heartbeat("g", "a", counts),
            Err(BrokerError::UnknownMember { .. })
        ));
        assert!(registry.state.lock().groups.is_empty());

        // A group that comes back starts from a generation never used.
        let again = join(&registry, "a", ConsumeMode::Clustering).unwrap();
        assert!(again.generation > before.generation);
    }

    #[tokio::test(start_paused = true)]
    async fn issue_8_groups_made_up_by_joins_do_not_accumulate() {
        let registry = GroupRegistry::new(Duration::from_secs(30));
        for n in 0..1_000 {
            let request = JoinRequest {
                group: format!("made-up-{n}"),
                member: "m".into(),
                mode: ConsumeMode::Clustering,
                topics: vec!["orders".into()],
            };
            registry
                .join(&request, |t| (t == "orders").then_some(8))
                .unwrap();
        }
        assert_eq!(registry.snapshot().len(), 1_000);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(registry.snapshot().is_empty());
        assert!(registry.state.lock().groups.is_empty());
    }
}
