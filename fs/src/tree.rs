//! [`Tree`]: a snapshot rendered as inodes, and the kernel invalidations a swap needs.
//!
//! Inode numbers come from an [`Inodes`] registry that lives as long as the mount, so a path
//! keeps its number across snapshots (the kernel may still hold it in its caches). A path that
//! changes kind (file to directory) gets a new number: the kernel refuses an inode whose type
//! changes.
//!
//! Each file carries a content generation. It stays the same while the file's content and secret
//! stay the same, and a new one is drawn when either changes. Open handles remember the
//! generation, so a read through a handle opened before a change fails instead of returning
//! content that is no longer in the snapshot.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use maestro_wire::SecretValue;

use crate::snapshot::Snapshot;

/// The root directory's inode number, fixed by FUSE.
pub(crate) const ROOT_INO: u64 = 1;

/// What a node is.
pub(crate) enum NodeKind {
    /// Children by name.
    Dir {
        children: BTreeMap<String, u64>,
    },
    File {
        content: SecretValue,
        secret: String,
        generation: u64,
    },
}

/// One file or directory of a rendered snapshot.
pub(crate) struct Node {
    pub(crate) parent: u64,
    /// Name in the parent ("" for the root).
    pub(crate) name: String,
    /// Relative path from the mount ("" for the root).
    pub(crate) path: String,
    pub(crate) kind: NodeKind,
    /// When this node last changed (content, or a directory's list of children).
    pub(crate) mtime: SystemTime,
    /// Number of child directories, for a directory's link count.
    pub(crate) subdirs: u32,
}

/// A snapshot rendered as an inode table. Immutable once built; swapped as a whole.
pub(crate) struct Tree {
    /// Indexed by inode number; `None` where the number belongs to a path not in this snapshot.
    nodes: Vec<Option<Node>>,
}

impl Tree {
    /// The tree with nothing but an empty root directory.
    pub(crate) fn empty(now: SystemTime) -> Tree {
        let mut tree = Tree { nodes: Vec::new() };
        tree.insert(ROOT_INO, root_node(now));
        tree
    }

    pub(crate) fn get(&self, ino: u64) -> Option<&Node> {
        usize::try_from(ino).ok().and_then(|i| self.nodes.get(i)).and_then(Option::as_ref)
    }

    /// The child `name` of directory `parent`.
    pub(crate) fn child(&self, parent: u64, name: &str) -> Option<(u64, &Node)> {
        match &self.get(parent)?.kind {
            NodeKind::Dir { children } => {
                let ino = *children.get(name)?;
                Some((ino, self.get(ino)?))
            }
            NodeKind::File { .. } => None,
        }
    }

    fn insert(&mut self, ino: u64, node: Node) {
        let Ok(i) = usize::try_from(ino) else { return };
        if self.nodes.len() <= i {
            self.nodes.resize_with(i + 1, || None);
        }
        self.nodes[i] = Some(node);
    }

    fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        usize::try_from(ino).ok().and_then(|i| self.nodes.get_mut(i)).and_then(Option::as_mut)
    }

    fn iter(&self) -> impl Iterator<Item = (u64, &Node)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| Some((i as u64, n.as_ref()?)))
    }
}

fn root_node(now: SystemTime) -> Node {
    Node {
        parent: ROOT_INO,
        name: String::new(),
        path: String::new(),
        kind: NodeKind::Dir { children: BTreeMap::new() },
        mtime: now,
        subdirs: 0,
    }
}

/// Inode numbers by (path, is a directory), for the life of a mount. Never shrinks, so a number
/// is never reused for another path.
pub(crate) struct Inodes {
    by_path: HashMap<(String, bool), u64>,
    next_ino: u64,
    next_generation: u64,
}

impl Inodes {
    pub(crate) fn new() -> Inodes {
        let mut by_path = HashMap::new();
        by_path.insert((String::new(), true), ROOT_INO);
        Inodes { by_path, next_ino: ROOT_INO + 1, next_generation: 1 }
    }

    fn ino(&mut self, path: &str, is_dir: bool) -> u64 {
        if let Some(ino) = self.by_path.get(&(path.to_owned(), is_dir)) {
            return *ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_path.insert((path.to_owned(), is_dir), ino);
        ino
    }

    fn generation(&mut self) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        generation
    }
}

/// One notification to send to the kernel after a swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Invalidation {
    /// Forget the dentry `name` in directory `parent`.
    Entry { parent: u64, name: String },
    /// Forget the attributes and cached data of an inode.
    Inode { ino: u64 },
}

/// Renders `snapshot` into a new tree, keeping the generation and time of every file whose
/// content and secret did not change since `old`.
pub(crate) fn build(snapshot: Snapshot, old: &Tree, inodes: &mut Inodes, now: SystemTime) -> Tree {
    let mut tree = Tree::empty(now);
    if let (Some(root), Some(new_root)) = (old.get(ROOT_INO), tree.get_mut(ROOT_INO)) {
        new_root.mtime = root.mtime;
    }
    for entry in snapshot.into_entries() {
        let mut parent = ROOT_INO;
        let mut start = 0;
        // Make every directory on the way; the snapshot guarantees none of them is a file.
        while let Some(pos) = entry.path[start..].find('/') {
            let end = start + pos;
            let dir_path = &entry.path[..end];
            let name = &entry.path[start..end];
            let ino = inodes.ino(dir_path, true);
            if tree.get(ino).is_none() {
                let mtime = old.get(ino).map_or(now, |n| n.mtime);
                tree.insert(
                    ino,
                    Node {
                        parent,
                        name: name.to_owned(),
                        path: dir_path.to_owned(),
                        kind: NodeKind::Dir { children: BTreeMap::new() },
                        mtime,
                        subdirs: 0,
                    },
                );
                link(&mut tree, parent, name, ino, true);
            }
            parent = ino;
            start = end + 1;
        }
        let name = entry.path[start..].to_owned();
        let ino = inodes.ino(&entry.path, false);
        let (generation, mtime) = match old.get(ino).map(|n| &n.kind) {
            Some(NodeKind::File { content, secret, generation })
                if *content == entry.content && *secret == entry.secret =>
            {
                (*generation, old.get(ino).map_or(now, |n| n.mtime))
            }
            _ => (inodes.generation(), now),
        };
        link(&mut tree, parent, &name, ino, false);
        tree.insert(
            ino,
            Node {
                parent,
                name,
                path: entry.path,
                kind: NodeKind::File { content: entry.content, secret: entry.secret, generation },
                mtime,
                subdirs: 0,
            },
        );
    }
    touch_changed_dirs(&mut tree, old, now);
    tree
}

fn link(tree: &mut Tree, parent: u64, name: &str, ino: u64, is_dir: bool) {
    if let Some(node) = tree.get_mut(parent) {
        if is_dir {
            node.subdirs += 1;
        }
        if let NodeKind::Dir { children } = &mut node.kind {
            children.insert(name.to_owned(), ino);
        }
    }
}

/// Gives a directory whose list of children changed the time of this swap.
fn touch_changed_dirs(tree: &mut Tree, old: &Tree, now: SystemTime) {
    let changed: Vec<u64> = tree
        .iter()
        .filter(|(ino, node)| dir_changed(old.get(*ino), node))
        .map(|(i, _)| i)
        .collect();
    for ino in changed {
        if let Some(node) = tree.get_mut(ino) {
            node.mtime = now;
        }
    }
}

fn dir_changed(old: Option<&Node>, new: &Node) -> bool {
    match (old.map(|n| &n.kind), &new.kind) {
        (Some(NodeKind::Dir { children: a }), NodeKind::Dir { children: b }) => a != b,
        (_, NodeKind::Dir { .. }) => true,
        _ => false,
    }
}

/// What the kernel must forget when `new` replaces `old`: the dentry of every removed or changed
/// name (deepest first), the inode of every removed or changed file, and every directory whose
/// children changed.
pub(crate) fn invalidations(old: &Tree, new: &Tree) -> Vec<Invalidation> {
    let mut entries: Vec<(usize, Invalidation)> = Vec::new();
    let mut inodes = Vec::new();
    for (ino, node) in old.iter() {
        if ino == ROOT_INO {
            continue;
        }
        let depth = node.path.matches('/').count();
        let entry = || Invalidation::Entry { parent: node.parent, name: node.name.clone() };
        match (&node.kind, new.get(ino).map(|n| &n.kind)) {
            (NodeKind::File { generation: a, .. }, Some(NodeKind::File { generation: b, .. })) => {
                if a != b {
                    entries.push((depth, entry()));
                    inodes.push(Invalidation::Inode { ino });
                }
            }
            (NodeKind::Dir { .. }, Some(NodeKind::Dir { .. })) => {}
            (NodeKind::File { .. }, _) => {
                // Also drop the inode's pages: files are served from the page cache between
                // opens (FOPEN_KEEP_CACHE), and a removed file's pages must not outlive it.
                entries.push((depth, entry()));
                inodes.push(Invalidation::Inode { ino });
            }
            (NodeKind::Dir { .. }, _) => entries.push((depth, entry())),
        }
    }
    for (ino, node) in new.iter() {
        // A new directory has nothing cached; one that existed may have a stale listing.
        let existed = old.get(ino).is_some();
        if existed && matches!(node.kind, NodeKind::Dir { .. }) && dir_changed(old.get(ino), node) {
            inodes.push(Invalidation::Inode { ino });
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    entries.into_iter().map(|(_, inv)| inv).chain(inodes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::FileEntry;

    fn snap(files: &[(&str, &str)]) -> Snapshot {
        Snapshot::new(
            files
                .iter()
                .map(|(p, c)| FileEntry {
                    path: (*p).into(),
                    secret: "S".into(),
                    content: SecretValue::from(*c),
                })
                .collect(),
        )
        .unwrap()
    }

    fn generation(tree: &Tree, ino: u64) -> u64 {
        match &tree.get(ino).unwrap().kind {
            NodeKind::File { generation, .. } => *generation,
            NodeKind::Dir { .. } => panic!("not a file"),
        }
    }

    #[test]
    fn renders_nested_paths_with_stable_inodes() {
        let mut inodes = Inodes::new();
        let now = SystemTime::now();
        let t1 = build(snap(&[("A", "1"), ("d/e/f", "2")]), &Tree::empty(now), &mut inodes, now);
        let (a, _) = t1.child(ROOT_INO, "A").unwrap();
        let (d, dnode) = t1.child(ROOT_INO, "d").unwrap();
        assert_eq!(dnode.subdirs, 1);
        let (e, _) = t1.child(d, "e").unwrap();
        let (f, fnode) = t1.child(e, "f").unwrap();
        assert_eq!(fnode.path, "d/e/f");
        assert_eq!(t1.get(ROOT_INO).unwrap().subdirs, 1);

        let t2 = build(snap(&[("A", "1"), ("d/e/f", "3")]), &t1, &mut inodes, now);
        assert_eq!(t2.child(ROOT_INO, "A").unwrap().0, a);
        assert_eq!(generation(&t2, a), generation(&t1, a), "unchanged file keeps its generation");
        assert_eq!(t2.child(e, "f").unwrap().0, f);
        assert_ne!(generation(&t2, f), generation(&t1, f), "changed file gets a new one");

        // A path that turns from a file into a directory gets a new inode number.
        let t3 = build(snap(&[("A/x", "1")]), &t2, &mut inodes, now);
        let (a_dir, _) = t3.child(ROOT_INO, "A").unwrap();
        assert_ne!(a_dir, a);
        assert!(t3.get(f).is_none());
    }

    #[test]
    fn invalidates_removed_and_changed_names_deepest_first() {
        let mut inodes = Inodes::new();
        let now = SystemTime::now();
        let t1 = build(
            snap(&[("A", "1"), ("B", "1"), ("d/e/f", "2")]),
            &Tree::empty(now),
            &mut inodes,
            now,
        );
        let (a, _) = t1.child(ROOT_INO, "A").unwrap();
        let (d, _) = t1.child(ROOT_INO, "d").unwrap();
        let (e, _) = t1.child(d, "e").unwrap();
        let (f, _) = t1.child(e, "f").unwrap();
        let t2 = build(snap(&[("A", "changed"), ("B", "1"), ("C", "new")]), &t1, &mut inodes, now);
        let inv = invalidations(&t1, &t2);
        assert_eq!(
            inv,
            vec![
                Invalidation::Entry { parent: e, name: "f".into() },
                Invalidation::Entry { parent: d, name: "e".into() },
                Invalidation::Entry { parent: ROOT_INO, name: "A".into() },
                Invalidation::Entry { parent: ROOT_INO, name: "d".into() },
                Invalidation::Inode { ino: a },
                Invalidation::Inode { ino: f },
                Invalidation::Inode { ino: ROOT_INO },
            ]
        );
        assert!(invalidations(&t2, &t2).is_empty(), "no change, no notification");
    }
}
