//! A flight: one retrieval shared by the concurrent requests for the same target. The retrieval
//! pushes instances in; each reader is streamed what has arrived so far, then the rest as it
//! arrives. The flight holds at most `ahead` bytes beyond its slowest reader (the retrieval
//! waits in [`Flight::room`], so the PACS is read no faster), and drops what every reader has
//! passed once it holds more than `kept` bytes; from then on nobody may join (a request
//! arriving later retrieves on its own). When its last reader goes away, `room` says so and the
//! retrieval stops; when it fails, every reader gets the same failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{stream, StreamExt};
use pacs_adapter::RetrievedInstance;

use crate::core::Error;

#[derive(Debug, Default)]
struct FlightState {
    /// Instances in arrival order; `None` once dropped.
    buffer: Vec<Option<RetrievedInstance>>,
    /// Cumulative sizes: `ends[i]` bytes up to and including instance `i`.
    ends: Vec<usize>,
    /// Instances before `dropped_below` are dropped: nobody may join any more.
    dropped_below: usize,
    withheld_before_first: usize,
    withheld_reasons: Vec<String>,
    partly: Vec<String>,
    /// How the retrieval ended; its failure is relayed to every reader.
    end: Option<Result<(), Arc<Error>>>,
    readers: HashMap<u64, usize>,
    next_reader: u64,
}

impl FlightState {
    fn bytes_between(&self, from: usize, to: usize) -> usize {
        let at = |i: usize| if i == 0 { 0 } else { self.ends[i - 1] };
        at(to) - at(from)
    }

    fn slowest(&self) -> usize {
        self.readers.values().copied().min().unwrap_or(self.buffer.len())
    }

    /// Drops what every reader has passed while more than `kept` bytes are held.
    fn trim(&mut self, kept: usize) {
        let slowest = self.slowest();
        while self.dropped_below < slowest && self.bytes_between(self.dropped_below, self.buffer.len()) > kept {
            self.buffer[self.dropped_below] = None;
            self.dropped_below += 1;
        }
    }

    fn add_reader(&mut self) -> u64 {
        let id = self.next_reader;
        self.next_reader += 1;
        self.readers.insert(id, 0);
        id
    }
}

/// One shared retrieval's instances and readers.
#[derive(Debug)]
pub(crate) struct Flight {
    state: Mutex<FlightState>,
    changed: tokio::sync::Notify,
    ahead: usize,
    kept: usize,
}

impl Flight {
    /// A flight that reads at most `ahead` bytes beyond its slowest reader and keeps up to
    /// `kept` bytes that every reader has passed.
    pub(crate) fn new(ahead: usize, kept: usize) -> Arc<Flight> {
        Arc::new(Flight { state: Mutex::default(), changed: tokio::sync::Notify::new(), ahead, kept })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FlightState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reader from the first instance; `None` when the flight no longer holds its start or
    /// has failed.
    pub(crate) fn join(self: &Arc<Self>) -> Option<Reader> {
        let mut state = self.lock();
        if state.dropped_below > 0 || matches!(state.end, Some(Err(_))) {
            return None;
        }
        let id = state.add_reader();
        Some(Reader { flight: self.clone(), id, cursor: 0 })
    }

    /// Records how many instances were withheld before the first, and why, and what sites
    /// said they left out (crate::core::retrieve::Retrieval::partly).
    pub(crate) fn set_withheld(&self, withheld: usize, reasons: Vec<String>, partly: Vec<String>) {
        let mut state = self.lock();
        state.withheld_before_first = withheld;
        state.withheld_reasons = reasons;
        state.partly = partly;
    }

    /// How many instances were withheld before the first, why, and what sites left out.
    pub(crate) fn withheld(&self) -> (usize, Vec<String>, Vec<String>) {
        let state = self.lock();
        (state.withheld_before_first, state.withheld_reasons.clone(), state.partly.clone())
    }

    /// Adds the next instance for every reader.
    pub(crate) fn push(&self, instance: RetrievedInstance) {
        let mut state = self.lock();
        let end = state.ends.last().copied().unwrap_or(0) + instance.part10.len();
        state.buffer.push(Some(instance));
        state.ends.push(end);
        state.trim(self.kept);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Waits until the slowest reader is within `ahead` bytes; false when nobody reads any more
    /// (the retrieval should stop).
    pub(crate) async fn room(&self) -> bool {
        loop {
            let notified = self.changed.notified();
            {
                let state = self.lock();
                if state.readers.is_empty() {
                    return false;
                }
                if state.bytes_between(state.slowest(), state.buffer.len()) <= self.ahead {
                    return true;
                }
            }
            notified.await;
        }
    }

    /// Ends the flight: every reader reads to the end, or gets the failure.
    pub(crate) fn end(&self, end: Result<(), Arc<Error>>) {
        self.lock().end = Some(end);
        self.changed.notify_waiters();
    }
}

/// One reader's place in a flight; leaving the flight when dropped.
#[derive(Debug)]
pub(crate) struct Reader {
    flight: Arc<Flight>,
    id: u64,
    cursor: usize,
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut state = self.flight.lock();
        state.readers.remove(&self.id);
        state.trim(self.flight.kept);
        drop(state);
        self.flight.changed.notify_waiters();
    }
}

impl Reader {
    /// The reader's next instance: `None` at the end of the flight.
    pub(crate) async fn next(&mut self) -> Option<Result<RetrievedInstance, Error>> {
        if self.cursor == usize::MAX {
            return None;
        }
        loop {
            let notified = self.flight.changed.notified();
            {
                let mut state = self.flight.lock();
                if let Some(slot) = state.buffer.get(self.cursor) {
                    let Some(instance) = slot.clone() else {
                        return Some(Err(Error::Internal("a coalesced retrieval fell behind".into())));
                    };
                    self.cursor += 1;
                    state.readers.insert(self.id, self.cursor);
                    state.trim(self.flight.kept);
                    drop(state);
                    self.flight.changed.notify_waiters();
                    return Some(Ok(instance));
                }
                match &state.end {
                    Some(Ok(())) => return None,
                    Some(Err(failure)) => {
                        // Reported once; the stream then ends.
                        self.cursor = usize::MAX;
                        return Some(Err(Error::Shared(failure.clone())));
                    }
                    None => {}
                }
            }
            notified.await;
        }
    }

    /// The rest of the flight as a stream of instances.
    pub(crate) fn into_stream(self) -> crate::core::retrieve::Instances {
        stream::unfold(self, |mut reader| async move { reader.next().await.map(|item| (item, reader)) }).boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An instance of `size` bytes of data set (a Part-10 file around it).
    fn instance(uid: &str, size: usize) -> RetrievedInstance {
        let part10 =
            pacs_adapter::part10::wrap("1.2.840.10008.5.1.4.1.1.7", uid, "1.2.840.10008.1.2.1", "", &vec![0; size]);
        RetrievedInstance::from_part10(bytes::Bytes::from(part10)).expect("a Part-10 instance")
    }

    fn uid(item: Option<Result<RetrievedInstance, Error>>) -> String {
        item.expect("an instance").expect("no failure").sop_instance_uid.as_str().to_owned()
    }

    /// Whether `future` is still waiting after the runtime has had time to run everything else.
    async fn still_waiting<F: std::future::Future>(future: F) -> bool {
        tokio::time::timeout(Duration::from_millis(50), future).await.is_err()
    }

    #[tokio::test]
    async fn readers_that_join_get_every_instance_from_the_first() {
        let flight = Flight::new(1 << 20, 1 << 20);
        let mut early = flight.join().expect("joins");
        flight.push(instance("1.1", 10));
        flight.push(instance("1.2", 10));
        assert_eq!(uid(early.next().await), "1.1");
        // A late joiner starts from the first instance too.
        let mut late = flight.join().expect("joins while the start is held");
        assert_eq!(uid(late.next().await), "1.1");
        assert_eq!(uid(late.next().await), "1.2");
        flight.push(instance("1.3", 10));
        flight.end(Ok(()));
        assert_eq!(uid(early.next().await), "1.2");
        assert_eq!(uid(early.next().await), "1.3");
        assert!(early.next().await.is_none(), "the end");
        assert_eq!(uid(late.next().await), "1.3");
        assert!(late.next().await.is_none());
    }

    #[tokio::test]
    async fn the_retrieval_waits_for_the_slowest_reader() {
        let part10 = instance("2.1", 10).part10.len();
        let flight = Flight::new(2 * part10, 100 * part10);
        let mut fast = flight.join().expect("joins");
        let mut slow = flight.join().expect("joins");
        for n in 1..=3 {
            flight.push(instance(&format!("2.{n}"), 10));
        }
        for _ in 0..3 {
            fast.next().await;
        }
        assert!(still_waiting(flight.room()).await, "three instances ahead of the slow reader, two allowed");
        slow.next().await;
        assert!(flight.room().await, "two ahead now");
    }

    #[tokio::test]
    async fn when_the_last_reader_leaves_the_retrieval_is_told_to_stop() {
        let flight = Flight::new(1 << 20, 1 << 20);
        let first = flight.join().expect("joins");
        let second = flight.join().expect("joins");
        flight.push(instance("3.1", 10));
        drop(first);
        assert!(flight.room().await, "one reader is left");
        drop(second);
        assert!(!flight.room().await, "nobody reads any more");
    }

    #[tokio::test]
    async fn a_failure_reaches_every_reader_and_closes_the_flight() {
        let flight = Flight::new(1 << 20, 1 << 20);
        let mut one = flight.join().expect("joins");
        let mut other = flight.join().expect("joins");
        flight.push(instance("4.1", 10));
        let failure = Error::SitesDown { message: "every site is down".into(), retry_after: Duration::from_secs(3) };
        flight.end(Err(Arc::new(failure)));
        for reader in [&mut one, &mut other] {
            assert_eq!(uid(reader.next().await), "4.1");
            let relayed = reader.next().await.expect("the failure").expect_err("a failure");
            assert!(matches!(relayed.origin(), Error::SitesDown { .. }), "{relayed}");
            assert_eq!(relayed.retry_after(), Some(Duration::from_secs(3)));
            assert!(reader.next().await.is_none(), "reported once");
        }
        assert!(flight.join().is_none(), "a failed flight is not joined");
    }

    #[tokio::test]
    async fn once_its_start_is_dropped_nobody_joins_but_no_reader_misses_an_instance() {
        let part10 = instance("5.1", 10).part10.len();
        // Keeps one instance that every reader has passed.
        let flight = Flight::new(100 * part10, part10);
        let mut reader = flight.join().expect("joins");
        for n in 1..=3 {
            flight.push(instance(&format!("5.{n}"), 10));
        }
        for _ in 0..3 {
            reader.next().await;
        }
        assert!(flight.join().is_none(), "the first instances are gone");
        // A reader still on the flight never misses an instance: it is kept until it passes.
        let flight = Flight::new(100 * part10, part10);
        let mut behind = flight.join().expect("joins");
        let mut ahead = flight.join().expect("joins");
        for n in 1..=3 {
            flight.push(instance(&format!("6.{n}"), 10));
        }
        for _ in 0..3 {
            ahead.next().await;
        }
        flight.end(Ok(()));
        for n in 1..=3 {
            assert_eq!(uid(behind.next().await), format!("6.{n}"));
        }
    }

    #[tokio::test]
    async fn a_reader_waits_for_the_next_instance() {
        let flight = Flight::new(1 << 20, 1 << 20);
        let mut reader = flight.join().expect("joins");
        let pusher = flight.clone();
        let waiting = tokio::spawn(async move { uid(reader.next().await) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        pusher.push(instance("7.1", 10));
        assert_eq!(waiting.await.expect("task"), "7.1");
    }
}
