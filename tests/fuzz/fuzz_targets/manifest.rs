//! Fuzz target: the persisted-catalog reader (`parquet/_catalog.json`,
//! `src/persist/manifest.rs`) and what start-up does with what it read.
//!
//! Invariants checked, for any bytes:
//! - `manifest::parse` (what `manifest::load` does after reading the file)
//!   returns a manifest or an error, never panics;
//! - a manifest it accepts can be printed (`ringest catalog`), answers the
//!   replay rule's questions (`record_persisted`, `row_persisted`,
//!   `has_runs_after`) for the generations, shards and sequences it names,
//!   takes a commit (`apply`), and round-trips: written as the server writes
//!   it and read back, it is the same manifest.
//!
//! Input: the file's bytes.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ringest::persist::manifest::{self, Commit, Manifest};

/// Series hashes the replay rule is asked about: both ends and the middle.
const HASHES: [u64; 3] = [0, 1 << 63, u64::MAX];

fn ask_replay_rule(manifest: &Manifest) {
    let wal = &manifest.wal;
    let mut generations = vec![0, 1, u64::MAX, wal.floor_generation];
    generations.extend(wal.runs.iter().map(|r| r.generation));
    generations.extend(wal.positions.iter().map(|p| p.generation));
    let mut shards = vec![None, Some(0)];
    shards.extend(wal.positions.iter().map(|p| Some(p.shard)));
    for &generation in &generations {
        let _ = wal.has_runs_after(generation);
        for &hash in &HASHES {
            let _ = wal.row_persisted(generation, hash);
        }
        for &shard in &shards {
            for sequence in [0, 1, u64::MAX] {
                let _ = wal.record_persisted(generation, shard, sequence);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("_catalog.json");
    let Ok(manifest) = manifest::parse(path, data) else {
        return;
    };
    let mut printed = Vec::new();
    manifest::describe(&manifest, &mut printed).expect("describe into memory");
    ask_replay_rule(&manifest);
    for database in &manifest.databases {
        let _ = manifest.files_of(&database.name).count();
    }

    // Round trip, as `manifest::store` writes it.
    let written = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    let read = manifest::parse(path, &written).expect("what we write reads back");
    assert_eq!(read, manifest, "round trip");

    // The owner applies commits to what it loaded.
    let mut owner = manifest.clone();
    let position = owner.wal.positions.first().copied();
    let run = owner.wal.runs.first().cloned();
    let commit = Commit {
        shard: position.map_or(0, |p| p.shard),
        shard_count: run.as_ref().map_or(1, |r| r.shard_count),
        generation: run
            .as_ref()
            .map_or(owner.wal.floor_generation, |r| r.generation),
        added: Vec::new(),
        removed: manifest
            .files
            .iter()
            .take(1)
            .map(|f| f.path.clone())
            .collect(),
        compaction: false,
        position: position.map(|p| p.sequence),
        covers_replay: true,
        before_shutdown: false,
    };
    let outcome = owner.apply(&commit);
    assert_eq!(outcome.floor_generation, owner.wal.floor_generation);
    ask_replay_rule(&owner);
});
