//! Everything that happens to WAL files before the shards start: the
//! generation counter, verification and repair ([`recover`]), read-only
//! [`replay`], and [`inspect`] / [`inspect_with`] for `ringest wal
//! inspect|verify` (per segment: records, sequences, kinds, the rows' time
//! range through a caller-supplied payload decoder, damage).
//!
//! These run once at start-up (or from the CLI) on the main thread before any
//! executor serves, so they use plain blocking `std::fs`. They never run
//! while a [`crate::wal::Wal`] writes into the same directory.
//!
//! A WAL root is either a directory of segment files (e.g. the catalog's) or a
//! directory of shard directories (`wal/0`, `wal/1`, ...), or both; every
//! immediate subdirectory holding segment files is one log. Directories are
//! ordered: the root itself, then numeric names by value, then other names.
//!
//! What each state found means and what we do is the table in [`crate::wal`].

// Start-up and CLI only, before any executor serves (module doc): blocking
// std::fs is the right tool here.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::record::{decode, Decoded, RecordError, Sequence, RECORD_MAGIC};
use super::segment::{
    parse_segment_file_name, SegmentHeader, SegmentHeaderError, SEGMENT_HEADER_BYTES,
};

/// File in the WAL root holding the last generation handed out.
pub const GENERATION_FILE: &str = "GENERATION";
const GENERATION_MAGIC: [u8; 4] = *b"RGEN";
const GENERATION_FILE_BYTES: usize = 16;

/// What is wrong, at [`Corruption::offset`] of [`Corruption::path`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorruptionKind {
    /// The segment header does not verify.
    SegmentHeader(SegmentHeaderError),
    /// Header's generation/index differ from the file name.
    HeaderNameMismatch,
    /// Bytes at the offset are not a valid record.
    Record(RecordError),
    /// A valid record with an unexpected sequence.
    SequenceGap { expected: u64, found: u64 },
    /// Segment index does not follow the previous segment of its generation.
    SegmentGap {
        expected_index: u64,
        found_index: u64,
    },
    /// First sequence does not follow the previous segment's last record.
    FirstSequence { expected: u64, found: u64 },
    /// In the newest segment: damage followed by a valid record at `next_valid`
    /// — not a torn tail, possibly acknowledged data.
    DamageBeforeValidRecord { next_valid: u64 },
    /// In the newest segment: damage, and the bytes after it could not all
    /// be searched for a valid record within the work bound
    /// (`SEARCH_CHECKSUM_BYTES_MAX_PER_BYTE`; only a pattern of many record
    /// headers claiming long payloads gets there). The search stopped at
    /// `searched_to`; a valid record may follow, so, as for
    /// `DamageBeforeValidRecord`, possibly acknowledged data.
    DamageBeforeUnsearchedBytes { searched_to: u64 },
}

/// A corruption that stops start-up unless skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    pub path: PathBuf,
    pub offset: u64,
    pub kind: CorruptionKind,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WAL corruption in {} at offset {}: {:?}",
            self.path.display(),
            self.offset,
            self.kind
        )
    }
}

/// Error of [`recover`] / [`replay`] / [`next_generation`].
#[derive(Debug)]
pub enum RecoveryError {
    Io { path: PathBuf, error: io::Error },
    Corrupt(Corruption),
}

impl fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            RecoveryError::Corrupt(c) => write!(
                f,
                "{c} (start with the skip-corrupt flag to skip the rest of that segment)"
            ),
        }
    }
}

impl std::error::Error for RecoveryError {}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> RecoveryError + '_ {
    move |error| RecoveryError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// A tail cut off the newest segment of a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    pub path: PathBuf,
    pub offset: u64,
    pub bytes_dropped: u64,
    /// False: only zeroed preallocated space was dropped (a clean end).
    pub torn: bool,
}

/// What [`recover`] found and did in one directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirReport {
    pub path: PathBuf,
    pub segments: u64,
    pub records: u64,
    pub truncated: Option<Truncation>,
    /// Segments after the newest one holding records that never held one
    /// (no valid header, zeros after it): an unused spare, or a creation a
    /// crash interrupted.
    pub removed: Vec<PathBuf>,
    /// Corruptions skipped because `skip_corrupt` was given.
    pub skipped: Vec<Corruption>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub dirs: Vec<DirReport>,
}

impl RecoveryReport {
    pub fn records(&self) -> u64 {
        self.dirs.iter().map(|d| d.records).sum()
    }
}

/// One record handed to the [`replay`] callback.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    pub generation: u64,
    /// Directory name under the root ("" for the root itself).
    pub dir: &'a str,
    /// The directory name as a shard number, if it is one.
    pub shard: Option<u32>,
    /// Index of the segment file within its generation: a packed record
    /// refers to definitions earlier in its own segment ([`crate::packed`]).
    pub segment: u64,
    pub sequence: Sequence,
    pub kind: u8,
    pub payload: &'a [u8],
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub segments: u64,
    pub records: u64,
    pub payload_bytes: u64,
    /// Segments whose reading stopped before their end (skipped corruption).
    pub segments_cut_short: u64,
}

// ---------------------------------------------------------------------------
// Listing

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DirKey(u8, u64, String);

#[derive(Clone, Debug)]
struct LogDir {
    key: DirKey,
    name: String,
    path: PathBuf,
    /// (generation, index, path), sorted.
    segments: Vec<(u64, u64, PathBuf)>,
}

fn segments_in(dir: &Path) -> io::Result<Vec<(u64, u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some((generation, index)) =
            entry.file_name().to_str().and_then(parse_segment_file_name)
        {
            if entry.file_type()?.is_file() {
                out.push((generation, index, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn log_dirs(root: &Path) -> Result<Vec<LogDir>, RecoveryError> {
    let mut dirs = Vec::new();
    if !root.exists() {
        return Ok(dirs);
    }
    let segments = segments_in(root).map_err(io_at(root))?;
    if !segments.is_empty() {
        dirs.push(LogDir {
            key: DirKey(0, 0, String::new()),
            name: String::new(),
            path: root.to_path_buf(),
            segments,
        });
    }
    for entry in fs::read_dir(root).map_err(io_at(root))? {
        let entry = entry.map_err(io_at(root))?;
        let path = entry.path();
        if !entry.file_type().map_err(io_at(&path))?.is_dir() {
            continue;
        }
        let segments = segments_in(&path).map_err(io_at(&path))?;
        if segments.is_empty() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let key = match name.parse::<u32>() {
            Ok(n) if n.to_string() == name => DirKey(1, u64::from(n), String::new()),
            _ => DirKey(2, 0, name.clone()),
        };
        dirs.push(LogDir {
            key,
            name,
            path,
            segments,
        });
    }
    dirs.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(dirs)
}

fn read_into(path: &Path, buffer: &mut Vec<u8>) -> Result<(), RecoveryError> {
    buffer.clear();
    File::open(path)
        .and_then(|mut f| f.read_to_end(buffer))
        .map_err(io_at(path))?;
    Ok(())
}

/// A segment "never held a record" when its header does not decode and
/// every byte after the header area is zero: a spare the committer prepared
/// ahead (it gets its header only when taken into use), or a creation a
/// crash interrupted.
fn never_held_a_record(bytes: &[u8]) -> bool {
    SegmentHeader::decode(bytes).is_err()
        && all_zero(bytes.get(SEGMENT_HEADER_BYTES..).unwrap_or(&[]))
}

/// Position of the last segment of `dir` that may hold records: the
/// segments after it never held one. `None` if no segment may. Reads a
/// segment whole only if its header does not decode (normally one spare).
fn last_holding_segment(
    dir: &LogDir,
    buffer: &mut Vec<u8>,
) -> Result<Option<usize>, RecoveryError> {
    for (i, (_, _, path)) in dir.segments.iter().enumerate().rev() {
        let mut head = Vec::with_capacity(SEGMENT_HEADER_BYTES);
        File::open(path)
            .and_then(|f| f.take(SEGMENT_HEADER_BYTES as u64).read_to_end(&mut head))
            .map_err(io_at(path))?;
        if SegmentHeader::decode(&head).is_ok() {
            return Ok(Some(i));
        }
        read_into(path, buffer)?;
        if !never_held_a_record(buffer) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------
// Scanning one segment (pure)

#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    /// EOF or zeros to EOF after `valid_end`.
    Clean,
    /// Damage at `offset`; `next_valid` says whether a later record
    /// verifies.
    Damaged {
        offset: usize,
        kind: CorruptionKind,
        next_valid: NextValid,
    },
}

/// What [`next_valid_record`] found after some offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NextValid {
    /// No record verifies anywhere after it.
    None,
    /// The first record that verifies starts here.
    At(usize),
    /// The work bound was reached before this offset; nothing before it
    /// verifies.
    Unsearched { searched_to: usize },
}

#[derive(Clone, Debug)]
struct Scan {
    header: Result<SegmentHeader, SegmentHeaderError>,
    records: u64,
    first_sequence: u64,
    /// Last valid sequence (first_sequence - 1 if no record).
    last_sequence: u64,
    valid_end: usize,
    end: End,
    payload_bytes: u64,
    kinds: [u64; 256],
}

fn all_zero(bytes: &[u8]) -> bool {
    // 16 bytes at a time: this scans whole preallocated tails.
    let mut chunks = bytes.chunks_exact(16);
    chunks.all(|c| u128::from_ne_bytes(c.try_into().expect("16 bytes")) == 0)
        && chunks.remainder().iter().all(|&b| b == 0)
}

/// Bound on the work of one [`next_valid_record`] search: checksummed
/// bytes per byte of the segment (plus [`SEARCH_CHECKSUM_BYTES_MIN`]).
///
/// Each position holding the record magic and a length that fits is
/// verified by a checksum over that length, so without a bound a segment
/// of record headers each claiming the rest of the file as payload costs
/// quadratic time (found while fuzzing recovery: a crafted 1 MiB segment
/// took 16 s to recover; a 64 MiB one would take about 18 hours, at every
/// start). Real damage stays far below the bound: records
/// after a torn or damaged spot are checksummed once each (together at most
/// the segment's size), and the magic inside payloads is rare.
const SEARCH_CHECKSUM_BYTES_MAX_PER_BYTE: usize = 4;
/// The bound's floor, so that small segments are always searched fully.
const SEARCH_CHECKSUM_BYTES_MIN: usize = 1 << 20;

/// The first record after `from` that verifies, searching at most
/// [`SEARCH_CHECKSUM_BYTES_MAX_PER_BYTE`] checksummed bytes per byte.
fn next_valid_record(bytes: &[u8], from: usize) -> NextValid {
    let budget = bytes
        .len()
        .saturating_mul(SEARCH_CHECKSUM_BYTES_MAX_PER_BYTE)
        .saturating_add(SEARCH_CHECKSUM_BYTES_MIN);
    let mut spent = 0usize;
    let finder = memchr::memmem::Finder::new(&RECORD_MAGIC);
    let mut at = from;
    while at < bytes.len() {
        let Some(found) = finder.find(&bytes[at..]).map(|i| at + i) else {
            return NextValid::None;
        };
        // What `decode` checksums here: the header's 16 covered bytes and
        // the payload, when the length field fits the bytes left.
        let claimed = bytes
            .get(found + 8..found + 12)
            .map_or(0, |l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize);
        spent = spent.saturating_add(16 + claimed.min(bytes.len() - found));
        if spent > budget {
            return NextValid::Unsearched { searched_to: found };
        }
        if matches!(decode(&bytes[found..]), Decoded::Record(_)) {
            return NextValid::At(found);
        }
        at = found + 1;
    }
    NextValid::None
}

fn scan(bytes: &[u8]) -> Scan {
    let mut out = Scan {
        header: SegmentHeader::decode(bytes),
        records: 0,
        first_sequence: 0,
        last_sequence: 0,
        valid_end: 0,
        end: End::Clean,
        payload_bytes: 0,
        kinds: [0; 256],
    };
    let header = match out.header {
        Ok(header) => header,
        Err(e) => {
            out.end = End::Damaged {
                offset: 0,
                kind: CorruptionKind::SegmentHeader(e),
                next_valid: next_valid_record(bytes, 0),
            };
            return out;
        }
    };
    out.first_sequence = header.first_sequence;
    let mut expected = header.first_sequence;
    let mut pos = SEGMENT_HEADER_BYTES;
    loop {
        if pos == bytes.len() {
            break;
        }
        let kind = match decode(&bytes[pos..]) {
            Decoded::Record(record) if record.sequence.0 == expected => {
                out.records += 1;
                out.payload_bytes += record.payload.len() as u64;
                out.kinds[record.kind as usize] += 1;
                expected += 1;
                pos += record.encoded_bytes();
                continue;
            }
            Decoded::Record(record) => CorruptionKind::SequenceGap {
                expected,
                found: record.sequence.0,
            },
            Decoded::Invalid(_) if all_zero(&bytes[pos..]) => break,
            Decoded::Invalid(e) => CorruptionKind::Record(e),
        };
        out.end = End::Damaged {
            offset: pos,
            kind,
            next_valid: next_valid_record(bytes, pos + 1),
        };
        break;
    }
    out.valid_end = pos;
    out.last_sequence = expected - 1;
    out
}

// ---------------------------------------------------------------------------
// Verdicts (shared by recover and inspect)

#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    Ok,
    /// Newest segment: drop everything from `offset` (torn or zeros).
    CutTail {
        offset: u64,
        torn: bool,
    },
    /// Newest segment without a valid header and nothing after it.
    /// After the last segment that may hold records, never held one (an
    /// unused spare, or a creation a crash interrupted): removed.
    RemoveUnfinished,
    Corrupt(Corruption),
}

struct Analyzed {
    path: PathBuf,
    generation: u64,
    index: u64,
    file_bytes: u64,
    scan: Scan,
    verdict: Verdict,
}

/// Analyzes every segment of one directory in order. `buffer` is reused.
fn analyze_dir(
    dir: &LogDir,
    buffer: &mut Vec<u8>,
    mut each: impl FnMut(&Analyzed, &[u8]) -> Result<(), RecoveryError>,
) -> Result<(), RecoveryError> {
    // (generation, index, last sequence) of the previous intact segment.
    let mut previous: Option<(u64, u64, u64)> = None;
    // The newest segment is the last that may hold records: only it can
    // have been in the middle of a write. Spares after it are removed.
    let last_holding = last_holding_segment(dir, buffer)?;
    for (i, (generation, index, path)) in dir.segments.iter().enumerate() {
        let newest = last_holding == Some(i);
        let after_newest = last_holding.is_none_or(|last| i > last);
        // A segment after the newest was read whole (and found to hold
        // nothing) by `last_holding_segment`: it is not read again.
        let (scan, file_bytes) = if after_newest {
            buffer.clear();
            let file_bytes = fs::metadata(path).map_err(io_at(path))?.len();
            (scan(buffer), file_bytes)
        } else {
            read_into(path, buffer)?;
            (scan(buffer), buffer.len() as u64)
        };
        let corrupt = |offset: u64, kind| {
            Verdict::Corrupt(Corruption {
                path: path.clone(),
                offset,
                kind,
            })
        };
        let verdict = match (&scan.header, &scan.end) {
            _ if after_newest => Verdict::RemoveUnfinished,
            (Err(_), End::Damaged { kind, .. }) => corrupt(0, *kind),
            (Err(e), End::Clean) => corrupt(0, CorruptionKind::SegmentHeader(*e)),
            (Ok(header), end) => {
                if header.generation != *generation || header.index != *index {
                    corrupt(0, CorruptionKind::HeaderNameMismatch)
                } else if let Some(gap) = previous.and_then(|(g, prev_index, last)| {
                    if g != *generation {
                        None
                    } else if header.index != prev_index + 1 {
                        Some(CorruptionKind::SegmentGap {
                            expected_index: prev_index + 1,
                            found_index: header.index,
                        })
                    } else if header.first_sequence != last + 1 {
                        Some(CorruptionKind::FirstSequence {
                            expected: last + 1,
                            found: header.first_sequence,
                        })
                    } else {
                        None
                    }
                }) {
                    corrupt(0, gap)
                } else {
                    match end {
                        End::Clean if newest && scan.valid_end < buffer.len() => Verdict::CutTail {
                            offset: scan.valid_end as u64,
                            torn: false,
                        },
                        End::Clean => Verdict::Ok,
                        End::Damaged {
                            offset,
                            next_valid: NextValid::None,
                            ..
                        } if newest => Verdict::CutTail {
                            offset: *offset as u64,
                            torn: true,
                        },
                        End::Damaged {
                            offset,
                            next_valid: NextValid::At(next),
                            ..
                        } if newest => corrupt(
                            *offset as u64,
                            CorruptionKind::DamageBeforeValidRecord {
                                next_valid: *next as u64,
                            },
                        ),
                        End::Damaged {
                            offset,
                            next_valid: NextValid::Unsearched { searched_to },
                            ..
                        } if newest => corrupt(
                            *offset as u64,
                            CorruptionKind::DamageBeforeUnsearchedBytes {
                                searched_to: *searched_to as u64,
                            },
                        ),
                        End::Damaged { offset, kind, .. } => corrupt(*offset as u64, *kind),
                    }
                }
            }
        };
        previous = match (&scan.header, &verdict) {
            (Ok(header), Verdict::Ok | Verdict::CutTail { .. }) => {
                Some((header.generation, header.index, scan.last_sequence))
            }
            // After a corrupt (skipped) segment, do not check continuity.
            _ => None,
        };
        let analyzed = Analyzed {
            path: path.clone(),
            generation: *generation,
            index: *index,
            file_bytes,
            scan,
            verdict,
        };
        each(&analyzed, buffer)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Verifies every segment of every directory under `wal_root`, cuts the torn
/// or zeroed tail of each directory's newest segment (the last one that may
/// hold records; durably), removes the segments after it, which never held
/// a record (an unused spare, or an interrupted creation), and fails with file and
/// offset on any other corruption unless `skip_corrupt` (then it is logged,
/// reported, and [`replay`] stops reading that segment at the damage).
pub fn recover(wal_root: &Path, skip_corrupt: bool) -> Result<RecoveryReport, RecoveryError> {
    let mut report = RecoveryReport::default();
    let mut buffer = Vec::new();
    for dir in log_dirs(wal_root)? {
        let mut dir_report = DirReport {
            path: dir.path.clone(),
            ..DirReport::default()
        };
        analyze_dir(&dir, &mut buffer, |analyzed, bytes| {
            let path = &analyzed.path;
            dir_report.segments += 1;
            dir_report.records += analyzed.scan.records;
            match &analyzed.verdict {
                Verdict::Ok => {}
                Verdict::CutTail { offset, torn } => {
                    let bytes_dropped = analyzed.file_bytes - offset;
                    let file = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(io_at(path))?;
                    file.set_len(*offset).map_err(io_at(path))?;
                    file.sync_all().map_err(io_at(path))?;
                    if *torn {
                        let nonzero = bytes[*offset as usize..]
                            .iter()
                            .filter(|&&b| b != 0)
                            .count();
                        tracing::warn!(
                            file = %path.display(),
                            offset,
                            bytes_dropped,
                            nonzero_bytes = nonzero,
                            "WAL: torn tail truncated (never acknowledged)"
                        );
                    } else {
                        tracing::info!(
                            file = %path.display(),
                            offset,
                            bytes_dropped,
                            "WAL: unused preallocated space released"
                        );
                    }
                    dir_report.truncated = Some(Truncation {
                        path: path.clone(),
                        offset: *offset,
                        bytes_dropped,
                        torn: *torn,
                    });
                }
                Verdict::RemoveUnfinished => {
                    fs::remove_file(path).map_err(io_at(path))?;
                    sync_dir(&dir.path).map_err(io_at(&dir.path))?;
                    // Expected on every restart (the spare prepared ahead)
                    // and harmless after a crash: nothing was in it, so
                    // nothing for an operator to do.
                    tracing::debug!(
                        file = %path.display(),
                        bytes = analyzed.file_bytes,
                        "WAL: removed a segment that never held a record (unused spare, or a creation a crash interrupted)"
                    );
                    dir_report.segments -= 1;
                    dir_report.removed.push(path.clone());
                }
                Verdict::Corrupt(corruption) => {
                    if !skip_corrupt {
                        return Err(RecoveryError::Corrupt(corruption.clone()));
                    }
                    tracing::error!(
                        file = %path.display(),
                        offset = corruption.offset,
                        kind = ?corruption.kind,
                        "WAL: corruption skipped on operator request; records after it are not replayed"
                    );
                    dir_report.skipped.push(corruption.clone());
                }
            }
            Ok(())
        })?;
        report.dirs.push(dir_report);
    }
    Ok(report)
}

/// Feeds every valid record to `f` in (generation, directory, sequence)
/// order. Read-only; run after [`recover`]. Reading a segment stops at the
/// first record that does not verify (only possible for skipped corruption).
pub fn replay(wal_root: &Path, f: impl FnMut(RecordRef<'_>)) -> Result<ReplayStats, RecoveryError> {
    replay_before(wal_root, u64::MAX, f)
}

/// [`replay`] of the generations before `generation_limit` only: the
/// segments the running generation has already created are left unread
/// (they hold nothing from before the start).
pub fn replay_before(
    wal_root: &Path,
    generation_limit: u64,
    mut f: impl FnMut(RecordRef<'_>),
) -> Result<ReplayStats, RecoveryError> {
    let dirs = log_dirs(wal_root)?;
    let mut order: Vec<(u64, &DirKey, u64, &LogDir, &Path)> = Vec::new();
    for dir in &dirs {
        for (generation, index, path) in &dir.segments {
            if *generation < generation_limit {
                order.push((*generation, &dir.key, *index, dir, path));
            }
        }
    }
    order.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    let mut stats = ReplayStats::default();
    let mut buffer = Vec::new();
    for (generation, _, index, dir, path) in order {
        read_into(path, &mut buffer)?;
        let Ok(header) = SegmentHeader::decode(&buffer) else {
            stats.segments_cut_short += 1;
            continue;
        };
        stats.segments += 1;
        let shard = match dir.key {
            DirKey(1, n, _) => u32::try_from(n).ok(),
            _ => None,
        };
        let mut expected = header.first_sequence;
        let mut pos = SEGMENT_HEADER_BYTES;
        while pos < buffer.len() {
            match decode(&buffer[pos..]) {
                Decoded::Record(record) if record.sequence.0 == expected => {
                    f(RecordRef {
                        generation,
                        dir: &dir.name,
                        shard,
                        segment: index,
                        sequence: record.sequence,
                        kind: record.kind,
                        payload: record.payload,
                    });
                    stats.records += 1;
                    stats.payload_bytes += record.payload.len() as u64;
                    expected += 1;
                    pos += record.encoded_bytes();
                }
                _ => {
                    if !all_zero(&buffer[pos..]) {
                        stats.segments_cut_short += 1;
                    }
                    break;
                }
            }
        }
    }
    Ok(stats)
}

/// Prints segments, records, sequence ranges, sizes, record kinds and any
/// damage of a WAL root or one log directory. Returns `Ok(false)` if there is
/// corruption that would stop start-up (a torn tail of a newest segment is
/// reported but is not corruption: recovery truncates it).
pub fn inspect(wal_root_or_dir: &Path, out: &mut impl Write) -> io::Result<bool> {
    inspect_with(wal_root_or_dir, out, |_| Ok(None))
}

/// [`inspect`], also printing each segment's time range, as RFC 3339 UTC
/// and as nanoseconds (`time <min>..=<max> (<min>..=<max> ns)`):
/// `time_range(record)` returns the (min, max) timestamps of one record's
/// rows, `Ok(None)` for records without rows, `Err` for a payload that does
/// not decode (printed; the log is then not clean). It is given every
/// record of a segment in order, from the first. The caller decodes its own
/// payloads (`ringest wal inspect` passes a
/// [`crate::shard::RecordTimes`]), so this module knows no payload format.
/// Segments without any such record print no range.
pub fn inspect_with(
    wal_root_or_dir: &Path,
    out: &mut impl Write,
    mut time_range: impl FnMut(RecordRef<'_>) -> Result<Option<(i64, i64)>, String>,
) -> io::Result<bool> {
    let dirs = log_dirs(wal_root_or_dir).map_err(|e| match e {
        RecoveryError::Io { error, .. } => error,
        RecoveryError::Corrupt(c) => io::Error::new(io::ErrorKind::InvalidData, c.to_string()),
    })?;
    let mut clean = true;
    let mut buffer = Vec::new();
    if dirs.is_empty() {
        writeln!(out, "{}: no WAL segments", wal_root_or_dir.display())?;
    }
    for dir in &dirs {
        writeln!(
            out,
            "dir {} ({} segments)",
            dir.path.display(),
            dir.segments.len()
        )?;
        let mut write_error: Option<io::Error> = None;
        let analyzed = analyze_dir(dir, &mut buffer, |a, bytes| {
            let name = a
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut line = format!(
                "  {name}  gen {} idx {}  file {} B  valid {} B  records {}",
                a.generation, a.index, a.file_bytes, a.scan.valid_end, a.scan.records
            );
            if a.scan.records > 0 {
                line.push_str(&format!(
                    "  seq {}..={}  payload {} B  kinds",
                    a.scan.first_sequence, a.scan.last_sequence, a.scan.payload_bytes
                ));
                let kinds: BTreeMap<usize, u64> = a
                    .scan
                    .kinds
                    .iter()
                    .enumerate()
                    .filter(|(_, &n)| n > 0)
                    .map(|(k, &n)| (k, n))
                    .collect();
                for (kind, n) in kinds {
                    line.push_str(&format!(" {kind}:{n}"));
                }
                let mut range: Option<(i64, i64)> = None;
                let mut pos = SEGMENT_HEADER_BYTES;
                let mut undecodable = None;
                while pos < a.scan.valid_end {
                    let Decoded::Record(record) = decode(&bytes[pos..a.scan.valid_end]) else {
                        break;
                    };
                    let shard = match dir.key {
                        DirKey(1, n, _) => u32::try_from(n).ok(),
                        _ => None,
                    };
                    match time_range(RecordRef {
                        generation: a.generation,
                        dir: &dir.name,
                        shard,
                        segment: a.index,
                        sequence: record.sequence,
                        kind: record.kind,
                        payload: record.payload,
                    }) {
                        Ok(Some((low, high))) => {
                            range = Some(match range {
                                Some((l, h)) => (l.min(low), h.max(high)),
                                None => (low, high),
                            });
                        }
                        Ok(None) => {}
                        Err(error) => {
                            undecodable.get_or_insert((record.sequence.0, error));
                        }
                    }
                    pos += record.encoded_bytes();
                }
                if let Some((low, high)) = range {
                    line.push_str(&format!(
                        "  time {}..={} ({low}..={high} ns)",
                        crate::clock::rfc3339_nanos(low),
                        crate::clock::rfc3339_nanos(high)
                    ));
                }
                if let Some((sequence, error)) = undecodable {
                    // Framing and checksum hold, the payload does not
                    // decode: start-up would stop at it.
                    clean = false;
                    line.push_str(&format!("  UNDECODABLE record seq {sequence}: {error}"));
                }
            }
            let status = match &a.verdict {
                Verdict::Ok => "ok".to_string(),
                Verdict::CutTail {
                    offset,
                    torn: false,
                } => {
                    format!("ok (preallocated space from {offset}, released at next start)")
                }
                Verdict::CutTail { offset, torn: true } => format!(
                    "TORN TAIL at {offset} ({} B never acknowledged; truncated at next start)",
                    a.file_bytes - offset
                ),
                Verdict::RemoveUnfinished => {
                    "never held a record: unused spare or unfinished creation (removed at next start)"
                        .to_string()
                }
                Verdict::Corrupt(c) => {
                    clean = false;
                    format!("CORRUPT at offset {}: {:?}", c.offset, c.kind)
                }
            };
            if let Err(e) = writeln!(out, "{line}  {status}") {
                write_error.get_or_insert(e);
            }
            Ok(())
        });
        if let Some(e) = write_error {
            return Err(e);
        }
        if let Err(e) = analyzed {
            clean = false;
            writeln!(out, "  ERROR {e}")?;
        }
    }
    writeln!(
        out,
        "{}",
        if clean {
            "verify: ok"
        } else {
            "verify: CORRUPT"
        }
    )?;
    Ok(clean)
}

// ---------------------------------------------------------------------------
// Generation counter

fn encode_generation(generation: u64) -> [u8; GENERATION_FILE_BYTES] {
    let mut out = [0u8; GENERATION_FILE_BYTES];
    out[0..4].copy_from_slice(&GENERATION_MAGIC);
    out[4..12].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..12]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode_generation(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != GENERATION_FILE_BYTES || bytes[0..4] != GENERATION_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    if crc != crc32c::crc32c(&bytes[0..12]) {
        return None;
    }
    let mut generation = [0u8; 8];
    generation.copy_from_slice(&bytes[4..12]);
    Some(u64::from_le_bytes(generation))
}

/// Returns this run's generation: one more than both the stored counter and
/// every generation found in segment names under `wal_root` (so it is unique
/// even if the counter file were lost), and stores it durably (write temp,
/// fsync, rename, fsync directory). Creates `wal_root` if needed.
pub fn next_generation(wal_root: &Path) -> io::Result<u64> {
    let existed = wal_root.exists();
    fs::create_dir_all(wal_root)?;
    if !existed {
        if let Some(parent) = wal_root.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    let counter_path = wal_root.join(GENERATION_FILE);
    let stored = match fs::read(&counter_path) {
        Ok(bytes) => match decode_generation(&bytes) {
            Some(generation) => generation,
            None => {
                tracing::warn!(file = %counter_path.display(), "WAL generation file damaged; using segment names");
                0
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let dirs = log_dirs(wal_root).map_err(|e| match e {
        RecoveryError::Io { error, .. } => error,
        RecoveryError::Corrupt(c) => io::Error::new(io::ErrorKind::InvalidData, c.to_string()),
    })?;
    let seen = dirs
        .iter()
        .flat_map(|d| d.segments.iter().map(|s| s.0))
        .max()
        .unwrap_or(0);
    let next = stored.max(seen).checked_add(1).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "WAL generation counter overflow",
        )
    })?;
    let temp = wal_root.join(format!("{GENERATION_FILE}.tmp"));
    {
        let mut file = File::create(&temp)?;
        file.write_all(&encode_generation(next))?;
        file.sync_all()?;
    }
    fs::rename(&temp, &counter_path)?;
    sync_dir(wal_root)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::record::{encode_into, record_bytes};

    fn segment(first_sequence: u64, records: &[&[u8]], tail_zeros: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; SEGMENT_HEADER_BYTES];
        SegmentHeader {
            generation: 1,
            index: 0,
            first_sequence,
            segment_bytes: 1 << 20,
        }
        .encode_into(&mut bytes);
        for (i, payload) in records.iter().enumerate() {
            let at = bytes.len();
            bytes.resize(at + record_bytes(payload.len()), 0);
            encode_into(
                &mut bytes[at..],
                0,
                Sequence(first_sequence + i as u64),
                payload,
            );
        }
        bytes.resize(bytes.len() + tail_zeros, 0);
        bytes
    }

    /// Goal: scan finds every record and a clean end in zero padding.
    /// Method: three records then zeros.
    #[test]
    fn scan_clean_segment() {
        let bytes = segment(5, &[b"a", b"bb", b"ccc"], 100);
        let s = scan(&bytes);
        assert_eq!(s.records, 3);
        assert_eq!((s.first_sequence, s.last_sequence), (5, 7));
        assert_eq!(s.end, End::Clean);
        assert_eq!(s.valid_end, bytes.len() - 100);
    }

    /// Goal: damage with a valid record after it is told apart from a torn tail.
    /// Method: corrupt the middle record's payload; scan reports the offset
    /// and the next valid record.
    #[test]
    fn scan_damage_before_valid_record() {
        let mut bytes = segment(1, &[b"first", b"second", b"third"], 0);
        let second = SEGMENT_HEADER_BYTES + record_bytes(5);
        bytes[second + 24] ^= 0xff;
        let s = scan(&bytes);
        assert_eq!(s.records, 1);
        let third = second + record_bytes(6);
        assert_eq!(
            s.end,
            End::Damaged {
                offset: second,
                kind: CorruptionKind::Record(RecordError::BadChecksum),
                next_valid: NextValid::At(third),
            }
        );
    }

    /// Goal: the generation file round-trips and rejects damage.
    /// Method: encode/decode; flip a byte.
    #[test]
    fn generation_file_round_trip() {
        let bytes = encode_generation(77);
        assert_eq!(decode_generation(&bytes), Some(77));
        let mut damaged = bytes;
        damaged[5] ^= 1;
        assert_eq!(decode_generation(&damaged), None);
    }
}
