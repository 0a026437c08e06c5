//! How a run cuts the source into key ranges before it walks them.
//!
//! The ranges come from a sample of the source's ids, read once: finding each chunk's end by
//! reading its ids through the primary key (as runs first did) cost about a second per chunk of
//! 100,000 at a million users, on the run's critical path, because those index reads fetch heap
//! pages whenever `auth.users` has changed since its last vacuum, which on a live project is
//! always. A sample of about `SAMPLES_PER_CHUNK` ids per chunk puts the boundaries at the sample's
//! quantiles, so chunks stay near the configured size whatever the ids look like (random v4,
//! time-ordered, imported); when the source is small the sample is the whole table and the
//! chunks are exact. The ranges always cover every id, so the sample only decides how evenly the
//! work is spread, never what is walked.

use uuid::Uuid;

use crate::repo::repair::{successor, KeyRange};

/// Sampled ids per chunk: enough that a chunk's size is within a few percent of the target.
pub const SAMPLES_PER_CHUNK: u64 = 100;

/// How many chunks `rows` source rows make at `size` rows each (at least one).
pub fn count(rows: i64, size: i64) -> usize {
    let rows = u64::try_from(rows).unwrap_or(0);
    let size = u64::try_from(size).unwrap_or(1).max(1);
    usize::try_from(rows.div_ceil(size).max(1)).unwrap_or(usize::MAX)
}

/// The percentage of `auth.users` pages to sample for `chunks` chunks over `rows` rows
/// (`tablesample system`), 100 when the table is small enough to read whole.
pub fn sample_percent(rows: i64, chunks: usize) -> f32 {
    let wanted = chunks as f64 * SAMPLES_PER_CHUNK as f64;
    let rows = rows.max(1) as f64;
    (100.0 * wanted / rows).min(100.0) as f32
}

/// `chunks` ranges that cover every id, split at the quantiles of `sample` (sorted ids).
pub fn split(sample: &[Uuid], chunks: usize) -> Vec<KeyRange> {
    let chunks = chunks.clamp(1, sample.len().max(1));
    let per_chunk = sample.len() as f64 / chunks as f64;
    let mut ranges = Vec::with_capacity(chunks);
    let mut first = Uuid::nil();
    for i in 1..chunks {
        let last = sample[(i as f64 * per_chunk).ceil() as usize - 1];
        if last < first {
            continue;
        }
        ranges.push(KeyRange { first, last });
        match successor(last) {
            Some(next) => first = next,
            None => return ranges,
        }
    }
    ranges.push(KeyRange {
        first,
        last: Uuid::max(),
    });
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u128) -> Vec<Uuid> {
        (1..=n).map(|i| Uuid::from_u128(i * 1000)).collect()
    }

    fn covers_everything(ranges: &[KeyRange]) {
        assert_eq!(ranges.first().unwrap().first, Uuid::nil());
        assert_eq!(ranges.last().unwrap().last, Uuid::max());
        for pair in ranges.windows(2) {
            assert_eq!(successor(pair[0].last), Some(pair[1].first));
        }
    }

    #[test]
    fn a_whole_table_sample_gives_chunks_of_the_configured_size() {
        let sample = ids(7);
        let ranges = split(&sample, count(7, 2));
        assert_eq!(ranges.len(), 4);
        covers_everything(&ranges);
        let sizes: Vec<usize> = ranges
            .iter()
            .map(|r| {
                sample
                    .iter()
                    .filter(|id| (r.first..=r.last).contains(*id))
                    .count()
            })
            .collect();
        assert_eq!(sizes, [2, 2, 2, 1]);
    }

    #[test]
    fn an_empty_or_tiny_sample_still_covers_every_id() {
        assert_eq!(split(&[], 5), [KeyRange::ALL]);
        let ranges = split(&ids(2), 10);
        assert_eq!(ranges.len(), 2);
        covers_everything(&ranges);
    }

    #[test]
    fn repeated_ids_in_a_sample_make_no_empty_ranges() {
        let sample = vec![Uuid::from_u128(5); 6];
        let ranges = split(&sample, 3);
        covers_everything(&ranges);
        assert!(ranges.iter().all(|r| r.first <= r.last));
    }

    #[test]
    fn the_sample_shrinks_with_the_table_it_is_drawn_from() {
        assert_eq!(sample_percent(7, count(7, 2)), 100.0);
        let percent = sample_percent(1_000_000, count(1_000_000, 100_000));
        assert!((percent - 0.1).abs() < 1e-6, "{percent}");
        assert_eq!(count(0, 100), 1);
    }
}
