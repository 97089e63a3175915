//! Building the subtree of a lazy directory from an archive's items (or,
//! for `--versions`, from several archives' items). Pure: items in, nodes
//! out, so every rule below is unit-tested without a repository.
//!
//! Archives can be crafted (an unencrypted tier is not authenticated by a
//! key): unsafe paths, names longer than Linux allows, duplicate names and
//! hard links to names that do not exist are left out, never trusted.

use super::tree::{Body, FileData, Ino, Meta, Node, dir_node, rfc3339_ns};
use crate::archive::Archive;
use crate::archive::extract::safe_components;
use crate::archive::item::{Item, ItemsReader, KIND_DIR, KIND_FILE, KIND_SYMLINK};
use crate::error::Result;
use crate::repo::Repository;
use crate::repo::manifest::ArchiveRef;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Linux's NAME_MAX: a longer name would make the kernel refuse the whole
/// directory listing it is in.
const NAME_MAX: usize = 255;
/// Directories made for parents the archive does not store.
const HIDDEN_PARENT: u32 = 0o700;

/// Nodes read from a lazy source, with local inode numbers: 0 is the
/// source's root; `parent` and directory entries are local indices.
#[derive(Debug)]
pub struct Subtree {
    nodes: Vec<Node>,
    /// Directories made for parents the items did not list (yet).
    synthetic: HashSet<Ino>,
}

impl Subtree {
    /// An empty tree whose root is an archive's (or the view's) directory.
    fn rooted(time: i64) -> Self {
        Self::new(Meta::synthetic_dir(time, 0o755))
    }

    pub fn new(root: Meta) -> Self {
        Self {
            nodes: vec![dir_node(0, root)],
            synthetic: HashSet::new(),
        }
    }

    pub fn into_nodes(self) -> Vec<Node> {
        self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn is_dir(&self, i: Ino) -> bool {
        matches!(self.nodes[i as usize].body, Body::Dir(_))
    }

    pub fn push(&mut self, parent: Ino, name: Vec<u8>, node: Node) -> Ino {
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
            Body::Dir(children) => children.get(name),
            _ => None,
        }
    }

    /// The directory at `parts` below the root, made where the archive has
    /// no item for it. None when a non-directory, or a directory `blocked`
    /// refuses (a file's versions), is in the way.
    pub fn dir_at(
        &mut self,
        parts: &[&[u8]],
        time: i64,
        blocked: &dyn Fn(Ino) -> bool,
    ) -> Option<Ino> {
        let mut at = 0;
        for part in parts {
            at = match self.child(at, part) {
                Some(c) if self.is_dir(c) && !blocked(c) => c,
                Some(_) => return None,
                None => {
                    let node = dir_node(at, Meta::synthetic_dir(time, HIDDEN_PARENT));
                    let d = self.push(at, part.to_vec(), node);
                    self.synthetic.insert(d);
                    d
                }
            };
        }
        Some(at)
    }

    /// Directory link counts: 2 plus one per subdirectory, as `find` and
    /// `ls` expect.
    pub fn count_dir_links(&mut self) {
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

/// An item's path split into its directories and its name; None for a
/// path that could escape (`..`, absolute) or a name Linux cannot hold.
fn split(path: &[u8]) -> Option<(Vec<&[u8]>, &[u8])> {
    let mut parts = safe_components(path)?;
    if parts.iter().any(|p| p.len() > NAME_MAX) {
        return None;
    }
    let name = parts.pop()?;
    Some((parts, name))
}

fn meta_of(item: &Item) -> Meta {
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

fn leaf_node(parent: Ino, item: &Item) -> Node {
    let body = match item.kind {
        KIND_FILE => Body::File(Arc::new(FileData::new(item.chunks.clone()))),
        KIND_SYMLINK => Body::Symlink(item.target.as_ref().map(|t| t.to_vec()).unwrap_or_default()),
        _ => Body::Special,
    };
    Node {
        parent,
        meta: meta_of(item),
        body,
    }
}

/// One archive's tree.
pub struct ArchiveBuilder {
    sub: Subtree,
    time: i64,
    /// Regular files by path, for hard links (the first name comes first).
    files: HashMap<Vec<u8>, Ino>,
}

impl ArchiveBuilder {
    pub fn new(time: i64) -> Self {
        Self {
            sub: Subtree::rooted(time),
            time,
            files: HashMap::new(),
        }
    }

    pub fn add(&mut self, item: Item) {
        let Some((dirs, name)) = split(&item.path) else {
            return;
        };
        let Some(parent) = self.sub.dir_at(&dirs, self.time, &|_| false) else {
            return;
        };
        let existing = self.sub.child(parent, name);
        if let Some(link) = &item.link {
            // A later name of a hard-linked file: only to a file named
            // before, and never over a name that exists.
            if let (None, Some(&first)) = (existing, self.files.get(link.as_slice())) {
                self.sub.nodes[first as usize].meta.nlink += 1;
                self.sub.link(parent, name.to_vec(), first);
            }
            return;
        }
        match (item.kind, existing) {
            // A directory made for an earlier child gets its own metadata.
            (KIND_DIR, Some(d)) if self.sub.synthetic.remove(&d) => {
                self.sub.nodes[d as usize].meta = meta_of(&item);
            }
            (KIND_DIR, None) => {
                self.sub
                    .push(parent, name.to_vec(), dir_node(parent, meta_of(&item)));
            }
            (_, Some(_)) => {} // a duplicate name: the first one stands
            (_, None) => {
                let ino = self
                    .sub
                    .push(parent, name.to_vec(), leaf_node(parent, &item));
                if item.kind == KIND_FILE {
                    self.files.insert(item.path.to_vec(), ino);
                }
            }
        }
    }

    pub fn finish(mut self) -> Subtree {
        self.sub.count_dir_links();
        self.sub
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

/// The versions view of several archives, fed oldest first: directories
/// merged (with the permission bits every archive granted: a directory
/// closed once keeps its old files closed); every regular file becomes a
/// directory of its name (a "holder") with each distinct content once,
/// `name.00001.ext`, `name.00002.ext`, ... in the order they first appear.
/// A path that was a regular file in any archive shows the file's
/// versions; otherwise the newest symlink or special file, or the
/// directory.
pub struct VersionsBuilder {
    sub: Subtree,
    time: i64,
    /// Per holder: the contents seen so far.
    seen: HashMap<Ino, HashSet<blake3::Hash>>,
    /// This archive's regular files by path, for its hard links.
    files: HashMap<Vec<u8>, Item>,
}

impl VersionsBuilder {
    pub fn new(time: i64) -> Self {
        Self {
            sub: Subtree::rooted(time),
            time,
            seen: HashMap::new(),
            files: HashMap::new(),
        }
    }

    /// The next archive's items follow.
    pub fn start_archive(&mut self, time: i64) {
        self.files.clear();
        self.time = time;
    }

    pub fn add(&mut self, mut item: Item) {
        let path = item.path.to_vec();
        let Some((dirs, name)) = split(&path) else {
            return;
        };
        let seen = &self.seen;
        let Some(parent) = self
            .sub
            .dir_at(&dirs, self.time, &|d| seen.contains_key(&d))
        else {
            return;
        };
        if let Some(link) = &item.link {
            let Some(first) = self.files.get(link.as_slice()) else {
                return;
            };
            item = first.clone();
            item.path = path.clone().into();
        }
        let existing = self.sub.child(parent, name);
        let holder = existing.filter(|e| self.seen.contains_key(e));
        match item.kind {
            KIND_DIR => self.merge_dir(parent, name, existing, holder, &item),
            KIND_FILE => {
                self.add_version(parent, name, existing, holder, &item);
                self.files.insert(path, item);
            }
            _ => match existing {
                None => {
                    self.sub
                        .push(parent, name.to_vec(), leaf_node(parent, &item));
                }
                Some(e) if !self.sub.is_dir(e) => {
                    self.sub.nodes[e as usize] = leaf_node(parent, &item);
                }
                Some(_) => {} // a directory or a file's versions stand
            },
        }
    }

    fn merge_dir(
        &mut self,
        parent: Ino,
        name: &[u8],
        existing: Option<Ino>,
        holder: Option<Ino>,
        item: &Item,
    ) {
        match existing {
            None => {
                self.sub
                    .push(parent, name.to_vec(), dir_node(parent, meta_of(item)));
            }
            Some(d) if holder.is_none() && self.sub.is_dir(d) => {
                let node = &mut self.sub.nodes[d as usize];
                let mut meta = meta_of(item);
                if !self.sub.synthetic.remove(&d) {
                    meta.mode &= node.meta.mode;
                }
                node.meta = meta;
            }
            Some(_) => {} // a file's versions, or a leaf, stand
        }
    }

    fn add_version(
        &mut self,
        parent: Ino,
        name: &[u8],
        existing: Option<Ino>,
        holder: Option<Ino>,
        item: &Item,
    ) {
        let holder = match (existing, holder) {
            (_, Some(h)) => h,
            (Some(d), None) if self.sub.is_dir(d) => return, // a directory stands
            (Some(leaf), None) => {
                // A symlink or special file before: the file's versions win.
                let meta = Meta::synthetic_dir(self.time, 0o755);
                self.sub.nodes[leaf as usize] = dir_node(parent, meta);
                leaf
            }
            (None, None) => {
                let meta = Meta::synthetic_dir(self.time, 0o755);
                self.sub.push(parent, name.to_vec(), dir_node(parent, meta))
            }
        };
        let mut h = blake3::Hasher::new();
        for c in &item.chunks {
            h.update(&c.0.0);
            h.update(&c.1.to_le_bytes());
        }
        let versions = self.seen.entry(holder).or_default();
        if !versions.insert(h.finalize()) {
            return;
        }
        let version = versions.len() as u32;
        self.sub.push(
            holder,
            versioned_name(name, version),
            leaf_node(holder, item),
        );
    }

    pub fn finish(mut self) -> Subtree {
        self.sub.count_dir_links();
        self.sub
    }
}

/// Reads one archive's items into a subtree.
pub fn load_archive(repo: &Repository, r: &ArchiveRef) -> Result<Subtree> {
    let archive = Archive::load(repo, r)?;
    let mut b = ArchiveBuilder::new(rfc3339_ns(&archive.time_start).unwrap_or(0));
    for item in ItemsReader::new(repo, archive.items) {
        b.add(item?);
    }
    Ok(b.finish())
}

/// Reads `archives` (oldest first) into the versions view.
pub fn load_versions(repo: &Repository, archives: &[ArchiveRef], time: i64) -> Result<Subtree> {
    let mut b = VersionsBuilder::new(time);
    for r in archives {
        let archive = Archive::load(repo, r)?;
        b.start_archive(rfc3339_ns(&archive.time_start).unwrap_or(time));
        for item in ItemsReader::new(repo, archive.items) {
            b.add(item?);
        }
    }
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::item::ChunkRef;
    use crate::id::BlobId;
    use crate::mount::tree::{ROOT, Tree};
    use serde_bytes::ByteBuf;

    fn item(path: &str, kind: u8, mode: u32) -> Item {
        Item {
            path: ByteBuf::from(path.as_bytes().to_vec()),
            kind,
            mode,
            ..Item::default()
        }
    }

    fn file(path: &str, content: u8) -> Item {
        let mut i = item(path, KIND_FILE, 0o644);
        i.chunks = vec![ChunkRef(BlobId([content; 32]), 10)];
        i.size = 10;
        i
    }

    fn link(path: &str, to: &str) -> Item {
        let mut i = item(path, KIND_FILE, 0o644);
        i.link = Some(ByteBuf::from(to.as_bytes().to_vec()));
        i
    }

    /// The subtree grafted under an archive directory of a repository
    /// mount, so paths can be looked up as the kernel would.
    fn mounted(sub: Subtree) -> (Tree, Ino) {
        let a = ArchiveRef {
            name: "a".into(),
            id: BlobId([0; 32]),
            time: "2026-12-01T00:00:00Z".into(),
            hostname: String::new(),
            username: String::new(),
            stats: Default::default(),
        };
        let mut t = Tree::of_repository(std::slice::from_ref(&a), 0);
        let dir = t.lookup(ROOT, b"a").unwrap_or_default();
        assert!(t.pending(dir).is_some());
        t.graft(dir, sub);
        assert!(t.pending(dir).is_none());
        (t, dir)
    }

    fn at(t: &Tree, from: Ino, path: &str) -> Option<Ino> {
        path.split('/')
            .try_fold(from, |d, p| t.lookup(d, p.as_bytes()))
    }

    fn names(t: &Tree, dir: Ino) -> Vec<String> {
        match t.get(dir).map(|n| &n.body) {
            Some(Body::Dir(c)) => c
                .from(0)
                .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
                .collect(),
            _ => vec![],
        }
    }

    #[test]
    fn an_archive_tree_keeps_its_metadata_links_and_refuses_crafted_entries() {
        let mut b = ArchiveBuilder::new(0);
        b.add(file("home/ann/a.txt", 1)); // parents not stored
        b.add(item("home/ann/docs", KIND_DIR, 0o750));
        b.add(file("home/ann/docs/f", 2));
        b.add(link("home/ann/docs/g", "home/ann/a.txt"));
        b.add(link("home/ann/docs/h", "home/ann/nowhere")); // dangling
        b.add(link("home/ann/a.txt", "home/ann/docs/f")); // over a name
        b.add(file("home/ann/docs/f", 9)); // a duplicate name
        b.add(file("../escape", 3));
        b.add(file("/abs", 3));
        b.add(file(&format!("home/{}", "n".repeat(256)), 3));
        b.add(item("home/ann", KIND_DIR, 0o711)); // the parent's own item, late
        let (t, dir) = mounted(b.finish());
        let home = at(&t, dir, "home").unwrap();
        let hm = &t.get(home).unwrap().meta;
        assert_eq!(hm.mode, 0o700, "an unstored parent is closed to others");
        assert_eq!(hm.uid, rustix::process::geteuid().as_raw());
        assert_eq!(
            t.get(at(&t, dir, "home/ann").unwrap()).unwrap().meta.mode,
            0o711
        );
        assert_eq!(names(&t, dir), ["home"]);
        assert_eq!(names(&t, home), ["ann"]);
        let docs = at(&t, dir, "home/ann/docs").unwrap();
        assert_eq!(names(&t, docs), ["f", "g"]);
        let a = at(&t, dir, "home/ann/a.txt").unwrap();
        assert_eq!(at(&t, docs, "g"), Some(a));
        assert_eq!(t.get(a).unwrap().meta.nlink, 2);
        let f = t.get(at(&t, docs, "f").unwrap()).unwrap();
        let Body::File(data) = &f.body else {
            panic!("f is a file")
        };
        assert_eq!(data.chunks[0].0, BlobId([2; 32]), "the first f stands");
        assert_eq!(t.get(docs).unwrap().meta.nlink, 2);
        assert_eq!(t.get(dir).unwrap().meta.nlink, 3);
    }

    #[test]
    fn versions_keep_the_extension_last() {
        assert_eq!(versioned_name(b"notes.txt", 1), b"notes.00001.txt");
        assert_eq!(versioned_name(b"a.tar.gz", 12), b"a.tar.00012.gz");
        assert_eq!(versioned_name(b"Makefile", 3), b"Makefile.00003");
        assert_eq!(versioned_name(b".bashrc", 2), b".bashrc.00002");
    }

    #[test]
    fn versions_hold_distinct_contents_and_survive_type_changes() {
        let mut b = VersionsBuilder::new(0);
        let archives: [Vec<Item>; 3] = [
            vec![
                item("d", KIND_DIR, 0o700),
                file("d/n.txt", 1),
                file("d/x", 1),
                item("d/y", KIND_DIR, 0o755),
                file("d/y/inner", 1),
                item("d/s", KIND_SYMLINK, 0o777),
            ],
            vec![
                item("d", KIND_DIR, 0o755),
                file("d/n.txt", 2),
                item("d/x", KIND_DIR, 0o755), // was a file
                file("d/x/under", 1),
                file("d/y", 4), // was a directory
                file("d/s", 5), // was a symlink
            ],
            vec![
                item("d", KIND_DIR, 0o755),
                file("d/n.txt", 2),
                link("d/m.txt", "d/n.txt"),
                item("d/s", KIND_SYMLINK, 0o777), // the file's versions stand
            ],
        ];
        for (i, items) in archives.into_iter().enumerate() {
            b.start_archive(i as i64);
            for it in items {
                b.add(it);
            }
        }
        let (t, dir) = mounted(b.finish());
        let d = at(&t, dir, "d").unwrap();
        assert_eq!(t.get(d).unwrap().meta.mode, 0o700, "closed once, closed");
        assert_eq!(names(&t, d), ["m.txt", "n.txt", "s", "x", "y"]);
        assert_eq!(
            names(&t, at(&t, d, "n.txt").unwrap()),
            ["n.00001.txt", "n.00002.txt"]
        );
        assert_eq!(names(&t, at(&t, d, "m.txt").unwrap()), ["m.00001.txt"]);
        assert_eq!(names(&t, at(&t, d, "x").unwrap()), ["x.00001"]);
        assert_eq!(names(&t, at(&t, d, "y").unwrap()), ["inner"]);
        assert_eq!(names(&t, at(&t, d, "s").unwrap()), ["s.00001"]);
    }
}
