//! How a run cuts a table into chunks before it walks them.
//!
//! A chunk is a range of the table's pages, walked with a TID range scan that reads each page
//! once. Chunks of ids (as runs first cut them) read, for random uuid v4 ids, nearly every page
//! of the table per chunk: a run read `auth.users` about once per chunk. The page ranges are
//! cut from the table's size and row count when the walk starts, for about the configured rows
//! each; the last one is open-ended, so rows added at the end meanwhile are walked too.
//!
//! A row updated while the run goes on may move to another page, and so be met twice (each
//! repair re-checks its drift as it writes: nothing is done twice) or not at all in this run
//! (the next run, the trigger or sync-one meets it).

use crate::repo::repair::Pages;

/// `pages` pages holding about `rows` rows, cut into chunks of about `chunk_rows` rows each; at
/// least one chunk, the last open-ended.
pub fn split(pages: i64, rows: i64, chunk_rows: i64) -> Vec<Pages> {
    let pages = u32::try_from(pages.max(0)).unwrap_or(u32::MAX);
    let rows = rows.max(1);
    let chunk_rows = chunk_rows.max(1);
    // Pages per chunk: the table's pages in the share of its rows a chunk holds.
    let per_chunk = (u64::from(pages) * chunk_rows as u64).div_ceil(rows as u64);
    let per_chunk = u32::try_from(per_chunk.max(1)).unwrap_or(u32::MAX);
    let mut chunks = Vec::new();
    let mut first = 0u32;
    while let Some(end) = first.checked_add(per_chunk).filter(|end| *end < pages) {
        chunks.push(Pages::of(first, Some(end)));
        first = end;
    }
    chunks.push(Pages::of(first, None));
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers_every_page(chunks: &[Pages]) {
        assert_eq!(chunks.first().unwrap().first, Pages::ALL.first);
        assert_eq!(chunks.last().unwrap().end, None);
        for pair in chunks.windows(2) {
            assert_eq!(pair[0].end, Some(pair[1].first));
        }
    }

    #[test]
    fn a_table_is_cut_into_chunks_of_about_the_configured_rows() {
        // 10,000 pages of 100 rows: chunks of 100,000 rows are 1,000 pages, 10 of them.
        let chunks = split(10_000, 1_000_000, 100_000);
        assert_eq!(chunks.len(), 10);
        covers_every_page(&chunks);
        assert_eq!(chunks[0], Pages::of(0, Some(1_000)));
    }

    #[test]
    fn an_empty_or_tiny_table_is_one_open_chunk() {
        assert_eq!(split(0, 0, 100), [Pages::ALL]);
        assert_eq!(split(3, 7, 100), [Pages::ALL]);
    }

    #[test]
    fn chunks_never_overlap_or_leave_a_page_out() {
        for (pages, rows, size) in [(7, 70, 20), (1, 1_000, 10), (1_001, 10_000, 999)] {
            let chunks = split(pages, rows, size);
            covers_every_page(&chunks);
            assert!(chunks.iter().all(|c| c.end.is_none_or(|end| c.first < end)));
        }
    }

    #[test]
    fn halving_a_chunk_narrows_it_to_single_places_and_never_loses_one() {
        let mut work = vec![Pages::of(3, None)];
        let mut singles = Vec::new();
        while let Some(chunk) = work.pop() {
            assert!(singles.len() < 10_000, "it terminates");
            match chunk.halves(5) {
                Some((a, b)) => {
                    assert_eq!(a.end, Some(b.first));
                    assert_eq!((a.first, b.end), (chunk.first, chunk.end));
                    if b.end.is_some() {
                        work.push(b);
                    }
                    work.push(a);
                }
                None => singles.push(chunk),
            }
        }
        // Pages 3 and 4 (the table had 5), one place each.
        assert_eq!(singles.len(), 2 * 292);
    }
}
