//! The mounted tree: inodes built from archives' items streams, without any
//! FUSE types, so it is tested on its own.
//!
//! Inode numbers are indices into one table (`ino = index + 1`; 1 is the
//! root). An archive's directory starts as `Body::Lazy` and is read from the
//! repository the first time something looks inside it, so mounting a
//! repository with a thousand archives reads nothing but the manifest.

use super::build::Subtree;
use crate::archive::item::{ChunkRef, KIND_DIR};
use crate::repo::manifest::ArchiveRef;
use std::sync::Arc;

pub type Ino = u64;
/// Extended attributes: (name, value) pairs as stored.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;
pub const ROOT: Ino = 1;

/// What `stat` shows of an entry, as stored in the archive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// One of the `item::KIND_*` values.
    pub kind: u8,
    /// Permission and special bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Nanoseconds since the Unix epoch.
    pub mtime: i64,
    pub atime: i64,
    pub ctime: i64,
    pub size: u64,
    pub rdev: u64,
    pub nlink: u32,
    pub xattrs: Xattrs,
}

impl Meta {
    /// A directory that has no item of its own, owned by the user who
    /// mounts: the mount's root and an archive's directory (`mode` 0755:
    /// they show no more than `strata list`), or a parent of the backed-up
    /// paths, which archives do not store (0700: who could enter it on the
    /// host is unknown, so with `allow_other` nobody else may).
    pub fn synthetic_dir(time: i64, mode: u32) -> Self {
        let (uid, gid) = mounter();
        Self {
            kind: KIND_DIR,
            mode,
            uid,
            gid,
            mtime: time,
            atime: time,
            ctime: time,
            nlink: 2,
            ..Self::default()
        }
    }
}

/// The user and group the mount runs as.
fn mounter() -> (u32, u32) {
    (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

/// A directory's entries, sorted by name: found by binary search, listed
/// from any offset in constant time (a listing of 300k entries comes in
/// thousands of batches).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Children(Vec<(Vec<u8>, Ino)>);

impl Children {
    pub fn get(&self, name: &[u8]) -> Option<Ino> {
        self.0
            .binary_search_by(|(n, _)| n.as_slice().cmp(name))
            .ok()
            .map(|i| self.0[i].1)
    }

    /// Adds or replaces `name`. Items arrive in name order, so this is
    /// nearly always an append.
    pub fn insert(&mut self, name: Vec<u8>, ino: Ino) {
        match self.0.binary_search_by(|(n, _)| n.as_slice().cmp(&name)) {
            Ok(i) => self.0[i].1 = ino,
            Err(i) => self.0.insert(i, (name, ino)),
        }
    }

    /// Entries from position `from` on.
    pub fn from(&self, from: usize) -> impl Iterator<Item = (&[u8], Ino)> {
        self.0
            .get(from..)
            .unwrap_or_default()
            .iter()
            .map(|(n, i)| (n.as_slice(), *i))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn remap(self, map: &dyn Fn(Ino) -> Ino) -> Self {
        Self(self.0.into_iter().map(|(n, i)| (n, map(i))).collect())
    }
}

/// A regular file's content: its chunks and where each ends in the file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileData {
    pub chunks: Vec<ChunkRef>,
    /// `ends[i]` is the file offset just past chunk `i`.
    pub ends: Vec<u64>,
}

impl FileData {
    pub fn new(chunks: Vec<ChunkRef>) -> Self {
        let mut end = 0u64;
        let ends = chunks
            .iter()
            .map(|c| {
                end += u64::from(c.1);
                end
            })
            .collect();
        Self { chunks, ends }
    }

    /// The length the chunks add up to (what a read can return).
    pub fn len(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunks overlapping `[offset, offset + len)`: (chunk index, the
    /// chunk's start in the file).
    pub fn span(&self, offset: u64, len: u64) -> Vec<(usize, u64)> {
        let first = self.ends.partition_point(|&e| e <= offset);
        let stop = offset.saturating_add(len);
        let mut out = Vec::new();
        for i in first..self.chunks.len() {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            if start >= stop {
                break;
            }
            out.push((i, start));
        }
        out
    }
}

/// Where a lazy directory's entries come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// The tree of one archive.
    Archive(ArchiveRef),
    /// Every file path of these archives, each a directory of its distinct
    /// versions (`--versions`).
    Versions(Vec<ArchiveRef>),
}

#[derive(Debug)]
pub enum Body {
    Dir(Children),
    /// A directory whose entries are read on first use.
    Lazy(Source),
    File(Arc<FileData>),
    Symlink(Vec<u8>),
    /// A fifo or device node: only its metadata.
    Special,
}

#[derive(Debug)]
pub struct Node {
    pub parent: Ino,
    pub meta: Meta,
    pub body: Body,
}

/// The inode table.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// A repository mount: one lazy directory per archive.
    pub fn of_repository(archives: &[ArchiveRef], time: i64) -> Self {
        let mut t = Self::default();
        t.nodes
            .push(dir_node(ROOT, Meta::synthetic_dir(time, 0o755)));
        for a in archives {
            // "." and ".." are valid archive names, but no directory can
            // have them as names.
            if a.name == "." || a.name == ".." {
                continue;
            }
            let meta = Meta::synthetic_dir(rfc3339_ns(&a.time).unwrap_or(time), 0o755);
            let ino = t.push(Node {
                parent: ROOT,
                meta,
                body: Body::Lazy(Source::Archive(a.clone())),
            });
            t.add_child(ROOT, a.name.as_bytes().to_vec(), ino);
        }
        t
    }

    /// A root read on first use from `source` (an archive mount, or the
    /// versions view).
    pub fn of_source(source: Source, time: i64) -> Self {
        Self {
            nodes: vec![Node {
                parent: ROOT,
                meta: Meta::synthetic_dir(time, 0o755),
                body: Body::Lazy(source),
            }],
        }
    }

    pub fn get(&self, ino: Ino) -> Option<&Node> {
        let i = usize::try_from(ino.checked_sub(1)?).ok()?;
        self.nodes.get(i)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every lazy directory has been read.
    pub fn complete(&self) -> bool {
        !self.nodes.iter().any(|n| matches!(n.body, Body::Lazy(_)))
    }

    /// Some entry has an extended attribute.
    pub fn any_xattrs(&self) -> bool {
        self.nodes.iter().any(|n| !n.meta.xattrs.is_empty())
    }

    /// The lazy source of `ino`, if it has not been read yet.
    pub fn pending(&self, ino: Ino) -> Option<Source> {
        match &self.get(ino)?.body {
            Body::Lazy(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Option<Ino> {
        match &self.get(parent)?.body {
            Body::Dir(children) => children.get(name),
            _ => None,
        }
    }

    fn push(&mut self, node: Node) -> Ino {
        self.nodes.push(node);
        self.nodes.len() as Ino
    }

    fn node_mut(&mut self, ino: Ino) -> &mut Node {
        &mut self.nodes[(ino - 1) as usize]
    }

    fn add_child(&mut self, parent: Ino, name: Vec<u8>, ino: Ino) {
        if let Body::Dir(children) = &mut self.node_mut(parent).body {
            children.insert(name, ino);
        }
    }

    /// Puts a subtree read from a lazy source in place of node `at`: the
    /// subtree's root (local index 0) becomes `at`, its other nodes are
    /// appended. The root keeps `at`'s own metadata (an archive's date).
    pub fn graft(&mut self, at: Ino, sub: Subtree) {
        if self.pending(at).is_none() {
            return; // another reader grafted it first
        }
        let base = self.nodes.len() as Ino; // local i (i >= 1) becomes base + i
        let map = |local: Ino| if local == 0 { at } else { base + local };
        let mut nodes = sub.into_nodes().into_iter();
        if let Some(root) = nodes.next() {
            let here = self.node_mut(at);
            here.body = remap(root.body, &map);
            here.meta.nlink = root.meta.nlink;
        }
        for mut n in nodes {
            n.parent = map(n.parent);
            n.body = remap(n.body, &map);
            self.nodes.push(n);
        }
    }
}

fn remap(body: Body, map: &dyn Fn(Ino) -> Ino) -> Body {
    match body {
        Body::Dir(children) => Body::Dir(children.remap(map)),
        other => other,
    }
}

pub(super) fn dir_node(parent: Ino, meta: Meta) -> Node {
    Node {
        parent,
        meta,
        body: Body::Dir(Children::default()),
    }
}

/// RFC 3339 to nanoseconds since the epoch.
pub fn rfc3339_ns(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()?
        .timestamp_nanos_opt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;

    fn chunk(n: u8, len: u32) -> ChunkRef {
        ChunkRef(BlobId([n; 32]), len)
    }

    #[test]
    fn a_span_names_every_chunk_a_read_touches_and_no_other() {
        let f = FileData::new(vec![chunk(1, 10), chunk(2, 5), chunk(3, 10)]);
        assert_eq!(f.len(), 25);
        assert_eq!(f.span(0, 10), vec![(0, 0)]);
        assert_eq!(f.span(9, 2), vec![(0, 0), (1, 10)]);
        assert_eq!(f.span(10, 5), vec![(1, 10)]);
        assert_eq!(f.span(12, 100), vec![(1, 10), (2, 15)]);
        assert_eq!(f.span(25, 10), vec![]);
        assert_eq!(f.span(u64::MAX - 1, 10), vec![]);
        assert!(FileData::new(vec![]).span(0, 10).is_empty());
    }

    #[test]
    fn children_stay_sorted_and_list_from_any_offset() {
        let mut c = Children::default();
        for (n, i) in [("b", 2), ("a", 1), ("c", 3), ("b", 4)] {
            c.insert(n.as_bytes().to_vec(), i);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(b"b"), Some(4));
        assert_eq!(c.get(b"zz"), None);
        let names: Vec<_> = c.from(1).map(|(n, _)| n.to_vec()).collect();
        assert_eq!(names, [b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(c.from(3).count(), 0);
        assert_eq!(c.from(usize::MAX).count(), 0);
    }

    #[test]
    fn dot_names_of_archives_are_left_out_of_a_repository_mount() {
        let a = |name: &str| ArchiveRef {
            name: name.into(),
            id: BlobId([0; 32]),
            time: "2026-12-01T00:00:00Z".into(),
            hostname: String::new(),
            username: String::new(),
            stats: Default::default(),
        };
        let t = Tree::of_repository(&[a("."), a(".."), a("night")], 0);
        let Some(Body::Dir(c)) = t.get(ROOT).map(|n| &n.body) else {
            panic!("the root is a directory");
        };
        assert_eq!(c.len(), 1);
        assert!(t.lookup(ROOT, b"night").is_some());
        // A node outside the table is no node.
        assert!(t.get(0).is_none());
        assert!(t.get(t.len() as Ino + 1).is_none());
    }
}
