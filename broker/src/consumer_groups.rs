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
}

#[derive(Debug)]
pub(crate) struct GroupRegistry {
    expiry: Duration,
    groups: Mutex<HashMap<String, Group>>,
}

impl GroupRegistry {
    pub(crate) fn new(expiry: Duration) -> Self {
        GroupRegistry {
            expiry,
            groups: Mutex::new(HashMap::new()),
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
        let mut groups = self.groups.lock();
        let group = groups
            .entry(request.group.clone())
            .or_insert_with(|| Group {
                mode: request.mode,
                generation: 0,
                members: BTreeMap::new(),
            });
        self.expire(group, now);
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
            group.generation += 1;
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
        let mut groups = self.groups.lock();
        let unknown = || BrokerError::UnknownMember {
            group: group_name.to_owned(),
            member: member.to_owned(),
        };
        let group = groups.get_mut(group_name).ok_or_else(unknown)?;
        self.expire(group, now);
        let entry = group.members.get_mut(member).ok_or_else(unknown)?;
        entry.last_seen = now;
        Ok(assign(group_name, group, member, &queue_count))
    }

    /// Removes a member; its queues go to the others at their next heartbeat.
    pub(crate) fn leave(&self, group_name: &str, member: &str) -> Result<()> {
        let mut groups = self.groups.lock();
        let removed = groups
            .get_mut(group_name)
            .and_then(|group| {
                group.members.remove(member).map(|_| {
                    group.generation += 1;
                })
            })
            .is_some();
        if removed {
            Ok(())
        } else {
            Err(BrokerError::UnknownMember {
                group: group_name.to_owned(),
                member: member.to_owned(),
            })
        }
    }

    /// Tells a group's members that something changed (their offsets were
    /// reset): the generation moves on.
    pub(crate) fn bump_generation(&self, group_name: &str) {
        if let Some(group) = self.groups.lock().get_mut(group_name) {
            group.generation += 1;
        }
    }

    /// Groups with their mode and live members (for stats).
    pub(crate) fn snapshot(&self) -> Vec<(String, ConsumeMode, Vec<String>)> {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        let mut out: Vec<_> = groups
            .iter_mut()
            .map(|(name, group)| {
                self.expire(group, now);
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

    fn expire(&self, group: &mut Group, now: Instant) {
        let before = group.members.len();
        group
            .members
            .retain(|_, m| now.saturating_duration_since(m.last_seen) < self.expiry);
        if group.members.len() != before {
            group.generation += 1;
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
}
