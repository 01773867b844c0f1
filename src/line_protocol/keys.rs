//! The series-key cache (issue 15 item 2): a line whose measurement-and-tags
//! section is byte for byte one parsed before takes that parse's result
//! (the tags' places in the section, in key order, and the series hash)
//! instead of scanning, unescaping, sorting and hashing its tags again.
//!
//! Exact, not probabilistic: an entry is found by a hash of the section
//! but used only if its stored bytes equal the line's. Since the bytes are
//! equal, every place an entry names is a valid, equally meaningful place
//! in the new line, and the tags borrowed from there are exactly what the
//! full parse would borrow. Only sections without a backslash are kept
//! (their names are borrowed from the line, never unescaped copies), and
//! only after the line parsed without error; an entry holds for the name
//! and tag limits it was parsed under ([`SeriesKeys::limits`]).
//!
//! Bounded: [`SLOTS`] slots in pairs (two-way set-associative: a section
//! may sit in either slot of its pair, the older of the two is replaced),
//! sections of [`KEY_BYTES_MIN`] to [`KEY_BYTES_MAX`] bytes. It pays when
//! the series of the traffic fit it: after a window of [`WINDOW`] lookups
//! that hit less than 3/4 of the time it rests for [`REST`] lines.
//!
//! Measured (`LP_BENCH_HOSTS=N cargo bench --bench line_protocol`, TSBS
//! cpu lines, CPU MB/s without → with): 100 hosts 910 → 1103, 300 hosts
//! 902 → 1037, 4000 hosts 911 → 906 (resting). The whole server
//! (`ringest-bench run --workload cpu --series 100`, 8 connections, 2
//! rounds): 768-806 k → 799-858 k points/s; with 10 000 series the same
//! within noise (`bench/RESULTS.md`).

use std::borrow::Cow;

use super::{Point, SeriesHasher};

/// Slots of a cache (a power of two). Few, so that the entries stay in a
/// core's nearest caches: an entry fetched from further away costs about
/// what parsing its section again does. With 8 Ki slots a server taking
/// the bench's 10 000 series (about 5 000 per shard fit, so the cache kept
/// answering) acknowledged 10-15 % fewer points/s than without the cache;
/// with 512 it rests there and the difference is noise.
pub const SLOTS: usize = 1 << 9;
/// Lookups per verdict on the hit rate.
pub const WINDOW: u32 = 4096;
/// Lines parsed without the cache after a window that hit less than 3/4
/// of the time (more series than fit: lookups and copies would only
/// cost), before it tries again.
pub const REST: u32 = 1 << 18;
/// Longest section kept.
pub const KEY_BYTES_MAX: usize = 512;
/// Shortest section looked up: a short section (a tag or two) parses
/// faster than it is hashed and compared (`cargo bench --bench
/// line_protocol`, the iot corpus: 611 MB/s without the cache, 476 with it
/// for every section).
pub const KEY_BYTES_MIN: usize = 64;

#[derive(Clone, Debug, Default)]
struct Slot {
    /// Hash of the section, compared before its bytes (which are
    /// elsewhere in memory).
    hash: u64,
    /// The section's bytes; empty: a free slot.
    key: Vec<u8>,
    measurement_end: u32,
    /// (key start, key end, value start, value end) per tag, in key order.
    tags: Vec<[u32; 4]>,
    series_hash: u64,
    /// Recency stamp: of a pair, the slot with the smaller one is replaced.
    used: u64,
}

/// Series keys recently parsed, per shard.
#[derive(Clone, Debug)]
pub struct SeriesKeys {
    slots: Vec<Slot>,
    /// (name bytes, tags per line) limits the entries were parsed under.
    limits: (usize, usize),
    clock: u64,
    pub hits: u64,
    pub misses: u64,
    /// Lookups and hits in the current window.
    window: (u32, u32),
    /// Lines still to parse without the cache.
    resting: u32,
    /// Rests after a window of few hits ([`SeriesKeys::new`]).
    adaptive: bool,
}

impl Default for SeriesKeys {
    fn default() -> SeriesKeys {
        SeriesKeys::new()
    }
}

fn section_hash(key: &[u8]) -> u64 {
    let mut hasher = SeriesHasher::new();
    hasher.write(key);
    hasher.finish()
}

impl SeriesKeys {
    pub fn new() -> SeriesKeys {
        SeriesKeys {
            adaptive: true,
            ..SeriesKeys::with_slots(SLOTS)
        }
    }

    /// A cache of `slots` slots (a power of two, at least 2) that never
    /// rests, for tests and fuzzing (with 2, every section competes for
    /// one pair).
    pub fn with_slots(slots: usize) -> SeriesKeys {
        assert!(
            slots.is_power_of_two() && slots >= 2,
            "slots: a power of two >= 2"
        );
        SeriesKeys {
            slots: vec![Slot::default(); slots],
            limits: (0, 0),
            clock: 0,
            hits: 0,
            misses: 0,
            window: (0, 0),
            resting: 0,
            adaptive: false,
        }
    }

    /// Makes the entries valid for these limits: all are dropped if they
    /// were parsed under others.
    pub fn limits(&mut self, name_bytes_max: usize, tags_per_line_max: usize) {
        let limits = (name_bytes_max, tags_per_line_max);
        if self.limits != limits {
            self.slots.iter_mut().for_each(|slot| slot.key.clear());
            self.limits = limits;
        }
    }

    /// The section of `line`: its bytes up to the first space, if no
    /// backslash comes before it and it is not too long to keep.
    pub(super) fn section(&mut self, line: &str) -> Option<usize> {
        if self.resting > 0 {
            self.resting -= 1;
            return None;
        }
        let bytes = line.as_bytes();
        let end = memchr::memchr2(b' ', b'\\', &bytes[..bytes.len().min(KEY_BYTES_MAX + 1)])?;
        (bytes[end] == b' ' && end >= KEY_BYTES_MIN).then_some(end)
    }

    /// If `line`'s section (ending at `end`) was parsed before, fills
    /// `point`'s measurement, tags and series hash from that parse.
    pub(super) fn fill<'a>(&mut self, line: &'a str, end: usize, point: &mut Point<'a>) -> bool {
        let key = &line.as_bytes()[..end];
        let hash = section_hash(key);
        let pair = (hash as usize) & (self.slots.len() - 2);
        let found = (pair..pair + 2).find(|&at| {
            let slot = &self.slots[at];
            slot.hash == hash && slot.key == key
        });
        self.window.0 += 1;
        self.window.1 += u32::from(found.is_some());
        if self.window.0 == WINDOW {
            if self.adaptive && self.window.1 < WINDOW / 4 * 3 {
                self.resting = REST;
            }
            self.window = (0, 0);
        }
        let Some(at) = found else {
            self.misses += 1;
            return false;
        };
        self.hits += 1;
        self.clock += 1;
        let slot = &mut self.slots[at];
        slot.used = self.clock;
        let piece = |start: u32, end: u32| -> &'a str {
            // SAFETY: `line[..end]` equals the section this slot was filled
            // from, in which `start..end` was a borrowed `&str` (char
            // boundaries of valid UTF-8); equal bytes have the same
            // boundaries.
            unsafe { line.get_unchecked(start as usize..end as usize) }
        };
        point.measurement = Cow::Borrowed(piece(0, slot.measurement_end));
        point.tags.clear();
        for &[key_start, key_end, value_start, value_end] in &slot.tags {
            point.tags.push((
                Cow::Borrowed(piece(key_start, key_end)),
                Cow::Borrowed(piece(value_start, value_end)),
            ));
        }
        point.series_hash = slot.series_hash;
        true
    }

    /// Keeps the parse of `line`'s section (ending at `end`), which
    /// `point` holds: measurement, tags in key order, series hash. Nothing
    /// is kept unless every name is borrowed from the section.
    pub(super) fn keep(&mut self, line: &str, end: usize, point: &Point<'_>) {
        let base = line.as_ptr() as usize;
        let place = |name: &Cow<'_, str>| -> Option<[u32; 2]> {
            let Cow::Borrowed(name) = name else {
                return None;
            };
            let start = (name.as_ptr() as usize).checked_sub(base)?;
            (start + name.len() <= end).then_some([start as u32, (start + name.len()) as u32])
        };
        let Some([0, measurement_end]) = place(&point.measurement) else {
            return;
        };
        let key = &line.as_bytes()[..end];
        let hash = section_hash(key);
        let pair = (hash as usize) & (self.slots.len() - 2);
        let at = if self.slots[pair].used <= self.slots[pair + 1].used {
            pair
        } else {
            pair + 1
        };
        self.clock += 1;
        let slot = &mut self.slots[at];
        slot.key.clear();
        slot.tags.clear();
        for (key, value) in &point.tags {
            let (Some([ks, ke]), Some([vs, ve])) = (place(key), place(value)) else {
                // An unescaped copy (not possible without a backslash, but
                // then the slot stays free).
                slot.tags.clear();
                return;
            };
            slot.tags.push([ks, ke, vs, ve]);
        }
        slot.key.extend_from_slice(key);
        slot.hash = hash;
        slot.measurement_end = measurement_end;
        slot.series_hash = point.series_hash;
        slot.used = self.clock;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line_protocol::{Lines, ParseOptions, Precision};

    fn parse(body: &str, keys: Option<&mut SeriesKeys>) -> Vec<String> {
        let options = ParseOptions::new(Precision::Nanoseconds, 0);
        let mut out = Vec::new();
        let mut each = |mut lines: Lines<'_, '_>| {
            let mut point = Point::default();
            while let Some(result) = lines.next_into(&mut point) {
                out.push(match result {
                    Ok(()) => format!(
                        "{:?} {:?} {:?} {} {:x}",
                        point.measurement,
                        point.tags,
                        point.fields,
                        point.timestamp_ns,
                        point.series_hash
                    ),
                    Err(error) => error.to_string(),
                });
            }
        };
        match keys {
            Some(keys) => each(Lines::with_keys(body, options, keys)),
            None => each(Lines::new(body, options)),
        }
        out
    }

    const HOSTS: &str = "cpu,hostname=host_1,region=eu-west-1,datacenter=eu-west-1a,rack=4,os=Ubuntu16.04LTS usage_user=1i 1\n\
         cpu,region=eu-west-1,hostname=host_2,datacenter=eu-west-1b,rack=5,os=Ubuntu16.04LTS usage_user=2i,usage_idle=3 2\n\
         cpu,hostname=host\\ 3,region=eu-west-1,datacenter=eu-west-1c,rack=6,os=Ubuntu16.04LTS usage_user=3i 3\n\
         cpu,hostname=host_4,region=eu-west-1,hostname=host_4,rack=6,os=Ubuntu16.04LTS usage_user=4i 4\n\
         short,k=v f=1 5\n";

    /// Goal: a second pass over the same sections is answered from the
    /// cache (the lines with a section kept: not the escaped one, not the
    /// one with a duplicate tag, not the short one) and gives exactly the
    /// full parse's points and errors.
    /// Method: one cache, two passes; hits and misses counted.
    #[test]
    fn sections_seen_before_come_from_the_cache() {
        let expected = parse(HOSTS, None);
        let mut keys = SeriesKeys::new();
        assert_eq!(parse(HOSTS, Some(&mut keys)), expected);
        assert_eq!(
            (keys.hits, keys.misses),
            (0, 3),
            "looked up: the 3 long unescaped sections"
        );
        assert_eq!(parse(HOSTS, Some(&mut keys)), expected);
        assert_eq!(keys.hits, 2, "kept: the two that parsed without error");
        // Other fields and times behind the same sections.
        let again = HOSTS.replace(" usage_user=", " usage_system=9,usage_user=");
        assert_eq!(parse(&again, Some(&mut keys)), parse(&again, None));
        assert_eq!(keys.hits, 4);
    }

    /// Goal: a hit needs the same bytes, not the same slot or length: in a
    /// cache of one pair, sections of equal length that differ in one byte
    /// (and one that differs only in tag order) each get their own parse.
    #[test]
    fn equal_length_sections_are_told_apart() {
        let one =
            "cpu,hostname=host_1,region=eu-west-1,datacenter=eu-west-1a,rack=41,os=Ubuntu v=1 1\n";
        let two =
            "cpu,hostname=host_2,region=eu-west-1,datacenter=eu-west-1a,rack=41,os=Ubuntu v=2 2\n";
        let reordered =
            "cpu,region=eu-west-1,hostname=host_1,datacenter=eu-west-1a,rack=41,os=Ubuntu v=3 3\n";
        for body in [format!("{one}{two}"), format!("{one}{reordered}")] {
            let expected = parse(&body, None);
            let mut keys = SeriesKeys::with_slots(2);
            for pass in 0..3 {
                assert_eq!(parse(&body, Some(&mut keys)), expected, "pass {pass}");
            }
            assert_eq!(keys.hits, 4, "both sections kept in the one pair");
        }
    }

    /// Goal: with more series than it holds, the cache rests (no lookup)
    /// after a window of few hits, and looks up again after the rest.
    /// Method: one window of distinct sections (all misses); the next
    /// [`REST`] lines are not looked up; the line after is.
    #[test]
    fn few_hits_make_it_rest() {
        let body: String = (0..WINDOW)
            .map(|h| format!("cpu,hostname=host_{h:05},region=eu-west-1,datacenter=eu-west-1a,rack=42 v=1 1\n"))
            .collect();
        let mut keys = SeriesKeys::new();
        parse(&body, Some(&mut keys));
        assert_eq!((keys.hits, keys.misses), (0, u64::from(WINDOW)));
        let rest: String = body
            .lines()
            .cycle()
            .take(REST as usize)
            .map(|l| format!("{l}\n"))
            .collect();
        parse(&rest, Some(&mut keys));
        assert_eq!(
            (keys.hits, keys.misses),
            (0, u64::from(WINDOW)),
            "resting: no lookup"
        );
        parse(&body[..body.find('\n').unwrap() + 1], Some(&mut keys));
        assert_eq!(
            keys.hits + keys.misses,
            u64::from(WINDOW) + 1,
            "looks up again"
        );
    }

    /// Goal: entries parsed under other limits are not used: a section
    /// with more tags than the new limit allows is refused again.
    #[test]
    fn other_limits_drop_the_entries() {
        let mut keys = SeriesKeys::new();
        parse(HOSTS, Some(&mut keys));
        let mut options = ParseOptions::new(Precision::Nanoseconds, 0);
        options.tags_per_line_max = 2;
        let mut lines = Lines::with_keys(HOSTS, options, &mut keys);
        let mut point = Point::default();
        let first = lines.next_into(&mut point).expect("a line");
        assert!(first.is_err(), "too many tags under the new limit");
    }
}
