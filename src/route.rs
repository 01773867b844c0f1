//! Routing: the rule that picks a series' shard, and the only hand-off
//! between cores.
//!
//! Every pair of shards is joined by one bounded glommio shared channel
//! (SPSC, lock-free, wakes the receiving executor). Everything that crosses
//! cores is a [`Message`] sent with `try_send`: a full channel is answered
//! *now* with backpressure, never queued without bound. Replies travel on
//! oneshot channels carried inside the message.

use std::rc::Rc;

use futures_channel::oneshot;
use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

use crate::backpressure::Overload;
use crate::batch::EncodedBatch;
use crate::catalog::{Decision, Entry, Proposal};
use crate::store::{ScanError, ScanRequest, ScanResponse};

/// The shard that owns a series: its hash modulo the shard count. Every
/// point of a series always lands on the same shard (while the count does
/// not change), so the series' WAL records and store rows live in one place.
pub fn owner(series_hash: u64, shard_count: usize) -> usize {
    assert!(shard_count > 0, "at least one shard");
    // Multiply-shift (Lemire) instead of `%`: uniform for any count, no division.
    ((u128::from(series_hash) * shard_count as u128) >> 64) as usize
}

/// The shard that owns the catalog.
pub const CATALOG_OWNER: usize = 0;

/// Why a shard could not do what another asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteError {
    /// A bound was reached (store memory, WAL pending bytes, queued work).
    Overloaded { cause: Overload },
    /// One line is larger than a WAL record may be.
    TooLarge {
        payload_bytes: usize,
        payload_bytes_max: usize,
    },
    /// The WAL's disk is full.
    NoSpace,
    /// The write or sync of this batch failed (the shard is now unhealthy).
    Failed { cause: String },
    /// The shard is unhealthy from an earlier failure.
    Unhealthy { cause: String },
    /// The persisted catalog was not rewritten; `may_name_files`: the one
    /// on disk may name the commit's files anyway (its rewrite failed after
    /// the rename and the old one could not be put back), so they must
    /// stay (start-up decides, from the catalog it finds).
    CatalogNotWritten { cause: String, may_name_files: bool },
    /// The shard is gone (shutting down).
    Gone,
}

pub type Reply<T> = oneshot::Sender<Result<T, RemoteError>>;

/// Everything that crosses cores.
pub enum Message {
    /// Append a sub-batch to the receiver's WAL, wait for its sync, apply it
    /// to the receiver's store, then reply.
    Write {
        payload: EncodedBatch,
        reply: Reply<()>,
    },
    /// To the catalog owner: decide these proposals durably.
    Propose {
        proposals: Vec<Proposal>,
        reply: Reply<Vec<Decision>>,
    },
    /// From the catalog owner: a change every shard applies (drop database).
    Broadcast { entry: Entry, reply: Reply<()> },
    /// Copy the receiver's metrics (for `/metrics`).
    Metrics {
        reply: oneshot::Sender<crate::metrics::Snapshot>,
    },
    /// To the catalog owner: record a snapshot's files and WAL position in
    /// the manifest, durably, then reply.
    Persist {
        commit: crate::persist::manifest::Commit,
        reply: Reply<crate::persist::manifest::CommitOutcome>,
    },
    /// From the catalog owner: these Parquet files left the manifest (every
    /// row in them expired) and are about to be deleted; the receiver stops
    /// reading them (its running scans start over), then replies.
    ForgetFiles {
        paths: Vec<String>,
        reply: Reply<()>,
    },
    /// Scan the receiver's store for a query.
    Scan {
        request: ScanRequest,
        reply: oneshot::Sender<Result<ScanResponse, ScanError>>,
    },
}

/// Channel ends created before the executors start (they are `Send`).
pub struct MeshEnds {
    /// `senders[to]` (None for self).
    pub senders: Vec<Option<SharedSender<Message>>>,
    /// `receivers[from]` (None for self).
    pub receivers: Vec<Option<SharedReceiver<Message>>>,
}

/// Builds the full mesh: one channel per ordered pair of shards.
pub fn mesh(shard_count: usize, capacity: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..shard_count)
        .map(|_| MeshEnds {
            senders: (0..shard_count).map(|_| None).collect(),
            receivers: (0..shard_count).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shard_count {
        for to in 0..shard_count {
            if from != to {
                let (sender, receiver) = shared_channel::new_bounded(capacity);
                ends[from].senders[to] = Some(sender);
                ends[to].receivers[from] = Some(receiver);
            }
        }
    }
    ends
}

/// A shard's connected senders to every other shard.
pub struct Peers {
    senders: Vec<Option<ConnectedSender<Message>>>,
}

impl Peers {
    /// Connects this shard's ends; returns the senders and the receivers.
    pub async fn connect(ends: MeshEnds) -> (Peers, Vec<ConnectedReceiver<Message>>) {
        // Both ends of a channel must connect before either connect returns,
        // so every end connects in its own task (a sequential loop would
        // deadlock two shards waiting for each other).
        let senders: Vec<_> = ends
            .senders
            .into_iter()
            .map(|sender| sender.map(|s| glommio::spawn_local(s.connect())))
            .collect();
        let receivers: Vec<_> = ends
            .receivers
            .into_iter()
            .flatten()
            .map(|r| glommio::spawn_local(r.connect()))
            .collect();
        let mut connected_senders = Vec::with_capacity(senders.len());
        for sender in senders {
            connected_senders.push(match sender {
                Some(task) => Some(task.await),
                None => None,
            });
        }
        let mut connected_receivers = Vec::with_capacity(receivers.len());
        for task in receivers {
            connected_receivers.push(task.await);
        }
        (
            Peers {
                senders: connected_senders,
            },
            connected_receivers,
        )
    }

    pub fn count(&self) -> usize {
        self.senders.len()
    }

    /// Sends now or refuses now (full channel: the caller answers 429/503).
    pub fn try_send(&self, to: usize, message: Message) -> Result<(), RemoteError> {
        let sender = self.senders[to]
            .as_ref()
            .expect("no channel to self: local work is done directly");
        sender
            .try_send(message)
            .map_err(|_| RemoteError::Overloaded {
                cause: Overload::CrossShardQueue,
            })
    }
}

/// Awaits a reply; a dropped sender means the peer went away.
pub async fn reply<T>(
    receiver: oneshot::Receiver<Result<T, RemoteError>>,
) -> Result<T, RemoteError> {
    receiver.await.unwrap_or(Err(RemoteError::Gone))
}

/// Runs `handle` for every message arriving on `receivers`, each message
/// in its own task so that concurrent writes share group commits.
pub fn serve_inbox<H>(receivers: Vec<ConnectedReceiver<Message>>, handle: Rc<H>)
where
    H: Fn(Message) + 'static,
{
    for receiver in receivers {
        let handle = handle.clone();
        glommio::spawn_local(async move {
            while let Some(message) = receiver.recv().await {
                handle(message);
            }
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the routing rule is stable and spreads series evenly.
    /// Method: fixed hashes map to fixed shards; 100k random-ish hashes
    /// over 3 shards land within 2% of a third each.
    #[test]
    fn owner_is_stable_and_even() {
        assert_eq!(owner(0, 4), 0);
        assert_eq!(owner(u64::MAX, 4), 3);
        assert_eq!(owner(u64::MAX / 2, 2), 0);
        assert_eq!(owner(u64::MAX / 2 + 1, 2), 1);
        let mut counts = [0usize; 3];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            counts[owner(x, 3)] += 1;
        }
        for count in counts {
            assert!((32_000..34_700).contains(&count), "{counts:?}");
        }
    }
}
