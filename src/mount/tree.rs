//! The mounted tree: inodes built from archives' items streams, without any
//! FUSE types, so it is tested on its own.
//!
//! Inode numbers are indices into one table (`ino = index + 1`; 1 is the
//! root). An archive's directory starts as `Body::Lazy` and is read from the
//! repository the first time something looks inside it, so mounting a
//! repository with a thousand archives reads nothing but the manifest.

use crate::archive::Archive;
use crate::archive::extract::safe_components;
use crate::archive::item::{ChunkRef, ItemsReader, KIND_DIR, KIND_FILE, KIND_SYMLINK};
use crate::error::Result;
use crate::repo::Repository;
use crate::repo::manifest::ArchiveRef;
use std::collections::{BTreeMap, HashMap, HashSet};
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
    /// A directory that has no item of its own (an archive's root, a parent
    /// the archive does not list): readable by everyone, dated `time`.
    pub fn synthetic_dir(time: i64) -> Self {
        Self {
            kind: KIND_DIR,
            mode: 0o755,
            mtime: time,
            atime: time,
            ctime: time,
            nlink: 2,
            ..Self::default()
        }
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
    Dir(BTreeMap<Vec<u8>, Ino>),
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
        t.nodes.push(dir_node(ROOT, Meta::synthetic_dir(time)));
        for a in archives {
            let meta = Meta::synthetic_dir(rfc3339_ns(&a.time).unwrap_or(time));
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
                meta: Meta::synthetic_dir(time),
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
            Body::Dir(children) => children.get(name).copied(),
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
        let mut nodes = sub.nodes.into_iter();
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
        Body::Dir(children) => Body::Dir(children.into_iter().map(|(k, v)| (k, map(v))).collect()),
        other => other,
    }
}

fn dir_node(parent: Ino, meta: Meta) -> Node {
    Node {
        parent,
        meta,
        body: Body::Dir(BTreeMap::new()),
    }
}

/// RFC 3339 to nanoseconds since the epoch.
pub fn rfc3339_ns(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()?
        .timestamp_nanos_opt()
}

/// Nodes read from a lazy source, with local inode numbers: 0 is the
/// source's root, `parent` and directory entries are local indices.
#[derive(Debug)]
pub struct Subtree {
    nodes: Vec<Node>,
}

impl Subtree {
    fn new(root: Meta) -> Self {
        Self {
            nodes: vec![dir_node(0, root)],
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn push(&mut self, parent: Ino, name: Vec<u8>, node: Node) -> Ino {
        let local = self.nodes.len() as Ino;
        self.nodes.push(node);
        self.link(parent, name, local);
        local
    }

    fn link(&mut self, parent: Ino, name: Vec<u8>, local: Ino) {
        if let Body::Dir(children) = &mut self.nodes[parent as usize].body {
            children.insert(name, local);
        }
    }

    fn child(&self, parent: Ino, name: &[u8]) -> Option<Ino> {
        match &self.nodes[parent as usize].body {
            Body::Dir(children) => children.get(name).copied(),
            _ => None,
        }
    }

    /// The directory at `parts` below the root, made (with synthetic
    /// metadata) where the archive has no item for it. None when a
    /// non-directory is in the way.
    fn dir_at(&mut self, parts: &[&[u8]], time: i64) -> Option<Ino> {
        let mut at = 0;
        for part in parts {
            at = match self.child(at, part) {
                Some(c) => match self.nodes[c as usize].body {
                    Body::Dir(_) => c,
                    _ => return None,
                },
                None => {
                    let node = dir_node(at, Meta::synthetic_dir(time));
                    self.push(at, part.to_vec(), node)
                }
            };
        }
        Some(at)
    }

    /// Directory link counts: 2 plus one per subdirectory, as `find` and
    /// `ls` expect.
    fn count_dir_links(&mut self) {
        let mut subdirs = vec![0u32; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            if i > 0 && matches!(n.body, Body::Dir(_)) {
                subdirs[n.parent as usize] += 1;
            }
        }
        for (n, extra) in self.nodes.iter_mut().zip(subdirs) {
            if matches!(n.body, Body::Dir(_)) {
                n.meta.nlink = 2 + extra;
            }
        }
    }
}

fn meta_of(item: &crate::archive::item::Item) -> Meta {
    Meta {
        kind: item.kind,
        mode: item.mode & 0o7777,
        uid: item.uid,
        gid: item.gid,
        mtime: item.mtime,
        atime: item.atime,
        ctime: item.ctime,
        size: item.size,
        rdev: item.rdev.unwrap_or(0),
        nlink: 1,
        xattrs: item
            .xattrs
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
    }
}

/// Reads one archive's items into a subtree. Items with unsafe paths
/// (`..`, absolute) are left out, as extraction leaves them out.
pub fn load_archive(repo: &Repository, r: &ArchiveRef) -> Result<Subtree> {
    let archive = Archive::load(repo, r)?;
    let time = rfc3339_ns(&archive.time_start).unwrap_or(0);
    let mut sub = Subtree::new(Meta::synthetic_dir(time));
    // Path -> node, for hard links (the first name comes first).
    let mut by_path: HashMap<Vec<u8>, Ino> = HashMap::new();
    for item in ItemsReader::new(repo, archive.items) {
        let item = item?;
        let Some(parts) = safe_components(&item.path) else {
            continue;
        };
        let Some((name, dirs)) = parts.split_last() else {
            continue;
        };
        let Some(parent) = sub.dir_at(dirs, time) else {
            continue;
        };
        if let Some(first) = item.link.as_ref().and_then(|l| by_path.get(l.as_slice())) {
            let first = *first;
            if matches!(sub.nodes[first as usize].body, Body::File(_)) {
                sub.nodes[first as usize].meta.nlink += 1;
                sub.link(parent, name.to_vec(), first);
                continue;
            }
        }
        let existing = sub.child(parent, name);
        if item.kind == KIND_DIR {
            match existing {
                // The directory was made for an earlier child: its own item
                // brings its real metadata.
                Some(d) if matches!(sub.nodes[d as usize].body, Body::Dir(_)) => {
                    sub.nodes[d as usize].meta = meta_of(&item);
                }
                Some(_) => {}
                None => {
                    let node = dir_node(parent, meta_of(&item));
                    let ino = sub.push(parent, name.to_vec(), node);
                    by_path.insert(item.path.to_vec(), ino);
                }
            }
            continue;
        }
        if existing.is_some() {
            continue; // a duplicate name: the first one stands
        }
        let body = leaf_body(&item);
        let ino = sub.push(
            parent,
            name.to_vec(),
            Node {
                parent,
                meta: meta_of(&item),
                body,
            },
        );
        by_path.insert(item.path.to_vec(), ino);
    }
    sub.count_dir_links();
    Ok(sub)
}

fn leaf_body(item: &crate::archive::item::Item) -> Body {
    match item.kind {
        KIND_FILE => Body::File(Arc::new(FileData::new(item.chunks.clone()))),
        KIND_SYMLINK => Body::Symlink(item.target.as_ref().map(|t| t.to_vec()).unwrap_or_default()),
        _ => Body::Special,
    }
}

/// `name.00003.ext`: borg's naming of versions, which keeps the extension
/// last so that tools still recognise the file type.
pub fn versioned_name(name: &[u8], version: u32) -> Vec<u8> {
    let dot = name.iter().rposition(|&b| b == b'.').filter(|&i| i > 0);
    let (stem, ext) = match dot {
        Some(i) => name.split_at(i),
        None => (name, &b""[..]),
    };
    let mut out = stem.to_vec();
    out.extend_from_slice(format!(".{version:05}").as_bytes());
    out.extend_from_slice(ext);
    out
}

/// The versions view of `archives` (oldest first): directories merged;
/// every regular file becomes a directory of its name holding each
/// distinct content once (`name.00001.ext`, `name.00002.ext`, ... in the
/// order they first appear). Symlinks and special files show their newest
/// form.
pub fn load_versions(repo: &Repository, archives: &[ArchiveRef], time: i64) -> Result<Subtree> {
    let mut sub = Subtree::new(Meta::synthetic_dir(time));
    // Per version directory: the contents seen so far.
    let mut seen: HashMap<Ino, HashSet<blake3::Hash>> = HashMap::new();
    for r in archives {
        let archive = Archive::load(repo, r)?;
        let atime = rfc3339_ns(&archive.time_start).unwrap_or(time);
        // This archive's regular files by path, to resolve its hard links.
        let mut files: HashMap<Vec<u8>, crate::archive::item::Item> = HashMap::new();
        for item in ItemsReader::new(repo, archive.items) {
            let mut item = item?;
            let path = item.path.to_vec();
            let Some(parts) = safe_components(&path) else {
                continue;
            };
            let Some((name, dirs)) = parts.split_last() else {
                continue;
            };
            let Some(parent) = sub.dir_at(dirs, atime) else {
                continue;
            };
            if let Some(first) = item.link.as_ref().and_then(|l| files.get(l.as_slice())) {
                item = first.clone();
                item.path = path.clone().into();
            }
            let existing = sub.child(parent, name);
            match item.kind {
                KIND_DIR => match existing {
                    Some(d) if matches!(sub.nodes[d as usize].body, Body::Dir(_)) => {
                        sub.nodes[d as usize].meta = meta_of(&item);
                    }
                    Some(_) => {}
                    None => {
                        sub.push(parent, name.to_vec(), dir_node(parent, meta_of(&item)));
                    }
                },
                KIND_FILE => {
                    add_version(&mut sub, &mut seen, parent, name, &item, atime);
                    files.insert(path.clone(), item);
                }
                _ => {
                    let node = Node {
                        parent,
                        meta: meta_of(&item),
                        body: leaf_body(&item),
                    };
                    match existing {
                        Some(e) if !matches!(sub.nodes[e as usize].body, Body::Dir(_)) => {
                            sub.nodes[e as usize] = node;
                        }
                        Some(_) => {}
                        None => {
                            sub.push(parent, name.to_vec(), node);
                        }
                    }
                }
            }
        }
    }
    sub.count_dir_links();
    Ok(sub)
}

fn add_version(
    sub: &mut Subtree,
    seen: &mut HashMap<Ino, HashSet<blake3::Hash>>,
    parent: Ino,
    name: &[u8],
    item: &crate::archive::item::Item,
    time: i64,
) {
    let holder = match sub.child(parent, name) {
        Some(d) if matches!(sub.nodes[d as usize].body, Body::Dir(_)) => d,
        Some(_) => return,
        None => sub.push(
            parent,
            name.to_vec(),
            dir_node(parent, Meta::synthetic_dir(time)),
        ),
    };
    let mut h = blake3::Hasher::new();
    for c in &item.chunks {
        h.update(&c.0.0);
        h.update(&c.1.to_le_bytes());
    }
    let versions = seen.entry(holder).or_default();
    if !versions.insert(h.finalize()) {
        return;
    }
    let version = versions.len() as u32;
    let node = Node {
        parent: holder,
        meta: meta_of(item),
        body: leaf_body(item),
    };
    sub.push(holder, versioned_name(name, version), node);
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
    fn versions_keep_the_extension_last() {
        assert_eq!(versioned_name(b"notes.txt", 1), b"notes.00001.txt");
        assert_eq!(versioned_name(b"a.tar.gz", 12), b"a.tar.00012.gz");
        assert_eq!(versioned_name(b"Makefile", 3), b"Makefile.00003");
        assert_eq!(versioned_name(b".bashrc", 2), b".bashrc.00002");
    }

    #[test]
    fn a_grafted_subtree_hangs_under_its_lazy_directory() {
        let a = ArchiveRef {
            name: "a".into(),
            id: BlobId([0; 32]),
            time: "2026-12-01T00:00:00Z".into(),
            hostname: String::new(),
            username: String::new(),
            stats: Default::default(),
        };
        let mut t = Tree::of_repository(std::slice::from_ref(&a), 0);
        let dir = t.lookup(ROOT, b"a").unwrap();
        assert!(t.pending(dir).is_some());
        let mut sub = Subtree::new(Meta::synthetic_dir(0));
        let d = sub.dir_at(&[b"x", b"y"], 0).unwrap();
        sub.push(
            d,
            b"f".to_vec(),
            Node {
                parent: d,
                meta: Meta::default(),
                body: Body::File(Arc::new(FileData::new(vec![chunk(1, 3)]))),
            },
        );
        sub.count_dir_links();
        t.graft(dir, sub);
        assert!(t.pending(dir).is_none());
        let x = t.lookup(dir, b"x").unwrap();
        let y = t.lookup(x, b"y").unwrap();
        let f = t.lookup(y, b"f").unwrap();
        assert_eq!(t.get(f).unwrap().parent, y);
        assert_eq!(t.get(y).unwrap().parent, x);
        assert_eq!(t.get(x).unwrap().parent, dir);
        assert_eq!(t.get(dir).unwrap().parent, ROOT);
        assert_eq!(t.get(dir).unwrap().meta.nlink, 3);
        assert_eq!(t.get(x).unwrap().meta.nlink, 3);
        assert_eq!(t.get(y).unwrap().meta.nlink, 2);
        // A node outside the table is no node.
        assert!(t.get(0).is_none());
        assert!(t.get(t.len() as Ino + 1).is_none());
    }
}
