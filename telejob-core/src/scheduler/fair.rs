//! Fair shares of the run slots: a run waits here for a slot before it is launched, runs that
//! wait are taken round robin by owner, and no owner holds more than its cap of slots. One
//! owner's thousand queued runs therefore delay another owner's run by at most one run's start:
//! the next slot that frees goes to the next owner in turn.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The slots runs are launched into.
#[derive(Debug)]
pub(super) struct Gate {
    /// Runs at once in all (`None`: no limit).
    slots: Option<usize>,
    /// Runs at once of one owner (`None`: no limit beyond `slots`).
    per_owner: Option<usize>,
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    running: usize,
    by_owner: HashMap<String, usize>,
    /// Each owner's waiting runs, by key (the run id), oldest first.
    waiting: HashMap<String, VecDeque<(String, oneshot::Sender<()>)>>,
    /// Owners with runs waiting, in turn order.
    turns: VecDeque<String>,
}

/// A slot held by a run; dropping it frees the slot for the next owner in turn.
#[derive(Debug)]
pub(super) struct Slot {
    gate: Arc<Gate>,
    owner: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.release(&self.owner);
    }
}

/// A run waiting for its turn; dropped before its turn, it gives the turn back.
struct Waiting {
    gate: Arc<Gate>,
    owner: String,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            // Handed a slot between the last poll and now: give it back.
            if rx.try_recv().is_ok() {
                self.gate.release(&self.owner);
            }
        }
    }
}

impl Gate {
    /// `slots` runs at once in all, `per_owner` of one owner.
    pub(super) fn new(slots: Option<usize>, per_owner: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            slots: slots.map(|n| n.max(1)),
            per_owner: per_owner.map(|n| n.max(1)),
            state: Mutex::new(GateState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn free_for(&self, st: &GateState, owner: &str) -> bool {
        self.slots.is_none_or(|n| st.running < n)
            && self
                .per_owner
                .is_none_or(|n| st.by_owner.get(owner).copied().unwrap_or(0) < n)
    }

    fn take(st: &mut GateState, owner: &str) {
        st.running += 1;
        *st.by_owner.entry(owner.to_string()).or_default() += 1;
    }

    fn put_back(st: &mut GateState, owner: &str) {
        st.running = st.running.saturating_sub(1);
        if let Some(n) = st.by_owner.get_mut(owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.by_owner.remove(owner);
            }
        }
    }

    /// Waits for a slot for the run `key` of `owner`. Cancel-safe: dropped while waiting, it
    /// leaves nothing taken.
    pub(super) async fn acquire(self: &Arc<Self>, owner: &str, key: &str) -> Slot {
        let rx = {
            let mut st = self.lock();
            let nobody_waits = st.waiting.get(owner).is_none_or(VecDeque::is_empty);
            if nobody_waits && self.free_for(&st, owner) {
                Self::take(&mut st, owner);
                return Slot {
                    gate: self.clone(),
                    owner: owner.to_string(),
                };
            }
            let (tx, rx) = oneshot::channel();
            let q = st.waiting.entry(owner.to_string()).or_default();
            q.push_back((key.to_string(), tx));
            if q.len() == 1 {
                st.turns.push_back(owner.to_string());
            }
            rx
        };
        let mut waiting = Waiting {
            gate: self.clone(),
            owner: owner.to_string(),
            rx: Some(rx),
        };
        let got = match waiting.rx.as_mut() {
            Some(rx) => rx.await.is_ok(),
            None => false,
        };
        waiting.rx = None;
        debug_assert!(got, "the gate never drops a waiter's sender");
        Slot {
            gate: self.clone(),
            owner: owner.to_string(),
        }
    }

    /// Frees a slot of `owner` and hands free slots to the owners in turn.
    fn release(&self, owner: &str) {
        let mut st = self.lock();
        Self::put_back(&mut st, owner);
        self.dispatch(&mut st);
    }

    /// Hands free slots to waiting runs, one owner after another; an owner at its cap keeps its
    /// place in the turn order.
    fn dispatch(&self, st: &mut GateState) {
        let mut passed = 0;
        while passed < st.turns.len() && self.slots.is_none_or(|n| st.running < n) {
            let Some(owner) = st.turns.pop_front() else {
                break;
            };
            if !self.free_for(st, &owner) {
                st.turns.push_back(owner);
                passed += 1;
                continue;
            }
            let Some(q) = st.waiting.get_mut(&owner) else {
                continue;
            };
            let Some((_, tx)) = q.pop_front() else {
                st.waiting.remove(&owner);
                continue;
            };
            let more = !q.is_empty();
            if !more {
                st.waiting.remove(&owner);
            }
            Self::take(st, &owner);
            if tx.send(()).is_err() {
                // That run stopped waiting: the slot stays free, the owner keeps its turn.
                Self::put_back(st, &owner);
                if more {
                    st.turns.push_front(owner);
                }
                continue;
            }
            if more {
                st.turns.push_back(owner);
            }
            passed = 0;
        }
    }

    /// Where the run `key` waits, if it does: its place (1 = the next to start, when a slot
    /// frees, the owners taking turns) and how many runs wait in all.
    pub(super) fn position(&self, key: &str) -> Option<(usize, usize)> {
        let st = self.lock();
        let live = |q: &VecDeque<(String, oneshot::Sender<()>)>| {
            q.iter().filter(|(_, tx)| !tx.is_closed()).count()
        };
        let (owner, k) = st.waiting.iter().find_map(|(o, q)| {
            q.iter()
                .filter(|(_, tx)| !tx.is_closed())
                .position(|(k, _)| k == key)
                .map(|k| (o.clone(), k))
        })?;
        let turn = st.turns.iter().position(|o| *o == owner)?;
        // A round gives each owner in turn one slot: before this run start the k runs of its
        // own owner ahead of it, and up to k (owners after it in the turn) or k + 1 (owners
        // before it) runs of every other owner.
        let ahead: usize = st
            .turns
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let n = st.waiting.get(o).map_or(0, live);
                if *o == owner {
                    k
                } else if i < turn {
                    n.min(k + 1)
                } else {
                    n.min(k)
                }
            })
            .sum();
        let total = st.waiting.values().map(live).sum();
        Some((ahead + 1, total))
    }

    /// Runs of `owner` waiting for a slot.
    #[cfg(test)]
    pub(super) fn waiting_of(&self, owner: &str) -> usize {
        self.lock().waiting.get(owner).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn held(gate: &Arc<Gate>, owner: &str) -> Option<Slot> {
        tokio::time::timeout(Duration::from_millis(50), gate.acquire(owner, "run"))
            .await
            .ok()
    }

    #[tokio::test]
    async fn free_slots_go_round_robin_by_owner() {
        let gate = Gate::new(Some(1), None);
        let first = gate.acquire("flood", "first").await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        // The flooder queues five runs before the other owner queues one.
        for (i, owner) in ["flood", "flood", "flood", "flood", "flood", "other"]
            .into_iter()
            .enumerate()
        {
            let (gate, tx) = (gate.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let slot = gate.acquire(owner, &format!("{owner}-{i}")).await;
                tx.send((i, owner)).expect("send");
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(slot);
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(gate.waiting_of("flood"), 5);
        // Places in the queue are the order they will start in.
        assert_eq!(gate.position("flood-0"), Some((1, 6)));
        assert_eq!(gate.position("other-5"), Some((2, 6)));
        assert_eq!(gate.position("flood-1"), Some((3, 6)));
        assert_eq!(gate.position("flood-4"), Some((6, 6)));
        assert_eq!(
            gate.position("first"),
            None,
            "a run holding a slot does not wait"
        );
        drop(first);
        for t in tasks {
            t.await.expect("task");
        }
        let mut order = Vec::new();
        while let Ok(x) = rx.try_recv() {
            order.push(x);
        }
        // One flooder run, then the other owner's, then the rest of the flood.
        assert_eq!(order[0], (0, "flood"));
        assert_eq!(order[1], (5, "other"), "{order:?}");
        assert_eq!(order.len(), 6);
    }

    #[tokio::test]
    async fn an_owner_at_its_cap_waits_while_others_run() {
        let gate = Gate::new(Some(4), Some(2));
        let a1 = gate.acquire("a", "a1").await;
        let _a2 = gate.acquire("a", "a2").await;
        assert!(held(&gate, "a").await.is_none(), "a third run of a waits");
        let b = held(&gate, "b").await;
        assert!(b.is_some(), "another owner gets a free slot");
        drop(a1);
        assert!(held(&gate, "a").await.is_some());
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_nothing_taken() {
        let gate = Gate::new(Some(1), None);
        let first = gate.acquire("a", "first").await;
        assert!(held(&gate, "b").await.is_none());
        drop(first);
        // Both slots' worth is free again: the abandoned wait took nothing.
        let again = held(&gate, "c").await;
        assert!(again.is_some());
        assert_eq!(gate.lock().running, 1);
    }
}
