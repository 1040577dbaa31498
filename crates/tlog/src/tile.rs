//! C2SP tlog-tiles: tile and entry-bundle paths, which tiles a tree of a
//! given size has, and the entry-bundle encoding. Producing a tile's bytes is
//! [`Tree::tile_bytes`](crate::Tree::tile_bytes); serving them is not here.

use std::fmt;

use crate::hash::{Hash, HASH_SIZE};

/// Hashes in a full tile.
pub const TILE_WIDTH: u64 = 256;
/// Tree levels a tile spans: a tile at level `L` holds tree level `8L`.
pub const TILE_HEIGHT: u32 = 8;
/// Largest tile level a path may name (tlog-tiles: "between 0 and 63").
pub const MAX_TILE_LEVEL: u8 = 63;

/// A malformed tile path or entry bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    /// The path is not `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`
    /// in canonical form.
    #[error("not a tile path: {path:?} ({reason})")]
    BadPath {
        /// The path given (cut to 100 bytes).
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An entry longer than a bundle's 16-bit length prefix allows.
    #[error("entry {index} is {len} bytes; an entry bundle holds entries of at most 65535 bytes")]
    EntryTooLong {
        /// Index of the entry in the bundle.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// More than 256 entries, or none, in a bundle.
    #[error("an entry bundle holds 1 to 256 entries, not {0}")]
    BadEntryCount(usize),
    /// An entry bundle ends inside an entry.
    #[error("entry bundle is truncated inside entry {0}")]
    TruncatedBundle(usize),
    /// A hash tile whose length is not a whole number of hashes, or not the
    /// width its path names.
    #[error("a tile of width {width} is {want} bytes, not {got}")]
    BadTileLength {
        /// The width expected.
        width: u16,
        /// Bytes expected.
        want: usize,
        /// Bytes received.
        got: usize,
    },
}

/// What a tile holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TileLevel {
    /// Merkle tree hashes at tile level `L` (tree level `8L`).
    Hashes(u8),
    /// Log entries, the entries whose leaf hashes form the level-0 tile.
    Entries,
}

/// One tile or entry bundle of a tiled log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    /// Hash level or entries.
    pub level: TileLevel,
    /// Index of the tile within its level.
    pub index: u64,
    /// Number of hashes or entries, 1 to 256; below 256 the tile is partial.
    pub width: u16,
}

impl TileId {
    /// A full hash tile.
    pub fn full(level: u8, index: u64) -> Self {
        TileId { level: TileLevel::Hashes(level), index, width: TILE_WIDTH as u16 }
    }

    /// Whether the tile is full (256 wide).
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// The entry bundle that goes with a level-0 hash tile, or `None` for a
    /// tile of another level.
    pub fn entry_bundle(&self) -> Option<TileId> {
        (self.level == TileLevel::Hashes(0)).then_some(TileId { level: TileLevel::Entries, ..*self })
    }

    /// The tile's path under a log's prefix: `tile/<L>/<N>[.p/<W>]` or
    /// `tile/entries/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        self.to_string()
    }

    /// Parses a canonical tile path (the inverse of [`TileId::path`]). Leading
    /// zeroes, an `x` on the last element, a missing `x` on the others, a
    /// redundant `x000` element, `.p/256` and `.p/0` are all refused, so each
    /// tile has exactly one path.
    pub fn parse(path: &str) -> Result<TileId, TileError> {
        let bad = |reason| TileError::BadPath { path: path.chars().take(100).collect(), reason };
        let rest = path.strip_prefix("tile/").ok_or_else(|| bad("does not start with tile/"))?;
        let (level_str, rest) = rest.split_once('/').ok_or_else(|| bad("no tile index"))?;
        let level = if level_str == "entries" {
            TileLevel::Entries
        } else {
            let l = parse_decimal(level_str).ok_or_else(|| bad("level is not a decimal number"))?;
            if l > u64::from(MAX_TILE_LEVEL) {
                return Err(bad("level is above 63"));
            }
            TileLevel::Hashes(l as u8)
        };
        let (index_str, width) = match rest.split_once(".p/") {
            Some((index_str, w)) => {
                let w = parse_decimal(w).ok_or_else(|| bad("partial width is not a decimal number"))?;
                if !(1..TILE_WIDTH).contains(&w) {
                    return Err(bad("partial width is not between 1 and 255"));
                }
                (index_str, w as u16)
            }
            None => (rest, TILE_WIDTH as u16),
        };
        let index = parse_index(index_str).ok_or_else(|| bad("index is not in x000/x000/000 form"))?;
        let tile = TileId { level, index, width };
        if tile.path() != path {
            return Err(bad("not the canonical path of its tile"));
        }
        Ok(tile)
    }
}

/// A decimal with no sign and no leading zero (other than `0` itself).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// `x001/x234/067` → 1234067.
fn parse_index(s: &str) -> Option<u64> {
    let mut index: u64 = 0;
    let mut elements = s.split('/').peekable();
    while let Some(e) = elements.next() {
        let last = elements.peek().is_none();
        let digits = if last { e } else { e.strip_prefix('x')? };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let d: u64 = digits.parse().ok()?;
        index = index.checked_mul(1000)?.checked_add(d)?;
    }
    Some(index)
}

impl fmt::Display for TileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.level {
            TileLevel::Hashes(l) => write!(f, "tile/{l}/")?,
            TileLevel::Entries => write!(f, "tile/entries/")?,
        }
        // Three-digit groups, most significant first; all but the last with `x`.
        let mut groups = Vec::with_capacity(7);
        let mut n = self.index;
        loop {
            groups.push(n % 1000);
            n /= 1000;
            if n == 0 {
                break;
            }
        }
        for (i, g) in groups.iter().rev().enumerate() {
            if i + 1 < groups.len() {
                write!(f, "x{g:03}/")?;
            } else {
                write!(f, "{g:03}")?;
            }
        }
        if !self.is_full() {
            write!(f, ".p/{}", self.width)?;
        }
        Ok(())
    }
}

/// Every hash tile that a tree of `size` leaves has: the full tiles and, per
/// level, the partial tile at the right edge. Level 0 also names the entry
/// bundles ([`TileId::entry_bundle`]).
pub fn tiles_for_size(size: u64) -> Vec<TileId> {
    new_tiles(0, size)
}

/// The hash tiles that are new or changed when a tree grows from `old_size`
/// to `new_size` leaves: what a log publishes alongside a new checkpoint.
/// Empty when `new_size <= old_size`.
pub fn new_tiles(old_size: u64, new_size: u64) -> Vec<TileId> {
    let mut tiles = Vec::new();
    if new_size <= old_size {
        return tiles;
    }
    for level in 0..=MAX_TILE_LEVEL {
        let shift = u32::from(level) * TILE_HEIGHT;
        if shift >= 64 {
            break;
        }
        // Hashes at this tile level, before and after.
        let (old_hashes, new_hashes) = (old_size >> shift, new_size >> shift);
        if new_hashes == 0 {
            break;
        }
        if old_hashes == new_hashes {
            continue;
        }
        // The tile holding old_size's partial edge is the first that changes.
        for index in old_hashes / TILE_WIDTH..new_hashes / TILE_WIDTH {
            tiles.push(TileId::full(level, index));
        }
        let width = (new_hashes % TILE_WIDTH) as u16;
        if width > 0 {
            tiles.push(TileId { level: TileLevel::Hashes(level), index: new_hashes / TILE_WIDTH, width });
        }
    }
    tiles
}

/// Splits a hash tile's bytes into hashes, checking the width its path names.
pub fn parse_tile_hashes(bytes: &[u8], width: u16) -> Result<Vec<Hash>, TileError> {
    let want = usize::from(width) * HASH_SIZE;
    if bytes.len() != want || width == 0 || u64::from(width) > TILE_WIDTH {
        return Err(TileError::BadTileLength { width, want, got: bytes.len() });
    }
    Ok(bytes.chunks_exact(HASH_SIZE).map(|c| c.try_into().expect("chunks are 32 bytes")).collect())
}

/// Encodes entries as an entry bundle: each entry as a big-endian 16-bit
/// length and the entry's bytes.
pub fn encode_entry_bundle<E: AsRef<[u8]>>(entries: &[E]) -> Result<Vec<u8>, TileError> {
    if entries.is_empty() || entries.len() as u64 > TILE_WIDTH {
        return Err(TileError::BadEntryCount(entries.len()));
    }
    let mut out = Vec::new();
    for (index, e) in entries.iter().enumerate() {
        let e = e.as_ref();
        let len = u16::try_from(e.len()).map_err(|_| TileError::EntryTooLong { index, len: e.len() })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// Splits an entry bundle into its entries (1 to 256 of them).
pub fn parse_entry_bundle(mut bytes: &[u8]) -> Result<Vec<&[u8]>, TileError> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        if entries.len() as u64 == TILE_WIDTH {
            return Err(TileError::BadEntryCount(entries.len() + 1));
        }
        let (len, rest) = bytes.split_first_chunk::<2>().ok_or(TileError::TruncatedBundle(entries.len()))?;
        let len = usize::from(u16::from_be_bytes(*len));
        if rest.len() < len {
            return Err(TileError::TruncatedBundle(entries.len()));
        }
        let (entry, rest) = rest.split_at(len);
        entries.push(entry);
        bytes = rest;
    }
    if entries.is_empty() {
        return Err(TileError::BadEntryCount(0));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_written_in_x_prefixed_groups_of_three() {
        assert_eq!(TileId::full(0, 1234067).path(), "tile/0/x001/x234/067");
        assert_eq!(TileId::full(2, 0).path(), "tile/2/000");
        assert_eq!(TileId::full(1, 1000).path(), "tile/1/x001/000");
        let partial = TileId { level: TileLevel::Hashes(0), index: 5, width: 112 };
        assert_eq!(partial.path(), "tile/0/005.p/112");
        assert_eq!(partial.entry_bundle().unwrap().path(), "tile/entries/005.p/112");
        assert_eq!(TileId::full(63, u64::MAX).path(), "tile/63/x018/x446/x744/x073/x709/x551/615");
    }

    #[test]
    fn paths_round_trip() {
        for t in [
            TileId::full(0, 0),
            TileId::full(63, u64::MAX),
            TileId { level: TileLevel::Entries, index: 999, width: 1 },
            TileId { level: TileLevel::Hashes(3), index: 1_000_000, width: 255 },
        ] {
            assert_eq!(TileId::parse(&t.path()).unwrap(), t);
        }
    }

    #[test]
    fn rejects_non_canonical_paths() {
        for p in [
            "",
            "tile/",
            "tile/0",
            "tile/0/",
            "tile/00/000",
            "tile/64/000",
            "tile/-1/000",
            "tile/+1/000",
            "tile/0/0",
            "tile/0/0000",
            "tile/0/x000/001",
            "tile/0/001/002",
            "tile/0/x001",
            "tile/0/x001/x002",
            "tile/0/000.p/256",
            "tile/0/000.p/0",
            "tile/0/000.p/012",
            "tile/0/000.p/",
            "tile/0/000.p/1/",
            "tile/entries/000.p/1.p/2",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
            "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
            "/tile/0/000",
            "tile/ENTRIES/000",
        ] {
            assert!(TileId::parse(p).is_err(), "{p:?} accepted");
        }
    }

    #[test]
    fn tiles_of_a_70000_leaf_tree_follow_the_spec_example() {
        // "a tree of size 70,000 will be represented by 273 full level 0
        // tiles, one partial level 0 tile of width 112, one full level 1
        // tile, one partial level 1 tile of width 17, and one partial level 2
        // tile of width 1."
        let tiles = tiles_for_size(70_000);
        let full0 = tiles.iter().filter(|t| t.level == TileLevel::Hashes(0) && t.is_full()).count();
        assert_eq!(full0, 273);
        assert!(tiles.contains(&TileId { level: TileLevel::Hashes(0), index: 273, width: 112 }));
        assert!(tiles.contains(&TileId::full(1, 0)));
        assert!(tiles.contains(&TileId { level: TileLevel::Hashes(1), index: 1, width: 17 }));
        assert!(tiles.contains(&TileId { level: TileLevel::Hashes(2), index: 0, width: 1 }));
        assert_eq!(tiles.len(), 273 + 4);
        // "a tree of size 256 will be represented by a full level 0 tile and a
        // partial level 1 tile of width 1."
        assert_eq!(
            tiles_for_size(256),
            vec![TileId::full(0, 0), TileId { level: TileLevel::Hashes(1), index: 0, width: 1 }]
        );
        assert!(tiles_for_size(0).is_empty());
    }

    #[test]
    fn new_tiles_are_those_that_changed() {
        assert_eq!(new_tiles(10, 10), vec![]);
        assert_eq!(new_tiles(10, 11), vec![TileId { level: TileLevel::Hashes(0), index: 0, width: 11 }]);
        assert_eq!(
            new_tiles(250, 260),
            vec![
                TileId::full(0, 0),
                TileId { level: TileLevel::Hashes(0), index: 1, width: 4 },
                TileId { level: TileLevel::Hashes(1), index: 0, width: 1 },
            ]
        );
        assert_eq!(new_tiles(256, 257), vec![TileId { level: TileLevel::Hashes(0), index: 1, width: 1 }]);
    }

    #[test]
    fn entry_bundles_round_trip_and_reject_bad_framing() {
        let entries: Vec<Vec<u8>> = vec![b"a".to_vec(), vec![], vec![7; 300]];
        let bundle = encode_entry_bundle(&entries).unwrap();
        assert_eq!(&bundle[..3], &[0, 1, b'a']);
        assert_eq!(parse_entry_bundle(&bundle).unwrap(), entries.iter().map(|e| e.as_slice()).collect::<Vec<_>>());
        assert_eq!(parse_entry_bundle(&bundle[..bundle.len() - 1]), Err(TileError::TruncatedBundle(2)));
        assert_eq!(parse_entry_bundle(&[0]), Err(TileError::TruncatedBundle(0)));
        assert_eq!(parse_entry_bundle(&[]), Err(TileError::BadEntryCount(0)));
        assert_eq!(parse_entry_bundle(&[0, 0].repeat(257)), Err(TileError::BadEntryCount(257)));
        assert!(matches!(encode_entry_bundle(&[vec![0; 65536]]), Err(TileError::EntryTooLong { index: 0, .. })));
        assert!(encode_entry_bundle::<&[u8]>(&[]).is_err());
    }

    #[test]
    fn tile_hashes_must_match_the_width() {
        assert_eq!(parse_tile_hashes(&[0; 64], 2).unwrap().len(), 2);
        assert!(parse_tile_hashes(&[0; 63], 2).is_err());
        assert!(parse_tile_hashes(&[], 0).is_err());
    }
}
