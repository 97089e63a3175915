//! Builds an archive from items that do not come from walking a directory
//! (a tar stream, another backup program's export): the same chunk → id →
//! dedup → compress → seal → pack pipeline as `create`, then items,
//! archive, index and manifest, in that order.

use super::create::{CreateResult, Observer, Progress, commit_archive, current_user, fill_stats};
use super::item::{ChunkRef, Dedup, ITEMS_COMPRESSION, Item, ItemsWriter};
use super::{ARCHIVE_VERSION, Archive, validate_name};
use crate::chunker::Chunker;
use crate::compress::Compression;
use crate::crypto::ObjectType;
use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::Repository;
use crate::repo::manifest::ArchiveStats;
use std::collections::HashMap;
use std::io::Read;

/// The archive's name and the metadata it is stored with.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    pub name: String,
    pub compression: Compression,
    pub comment: String,
    /// Defaults: this host, this user, the time of the build.
    pub hostname: Option<String>,
    pub username: Option<String>,
    /// RFC 3339.
    pub time_start: Option<String>,
    pub time_end: Option<String>,
    pub command_line: Vec<String>,
    pub imported_from: Option<String>,
    pub dry_run: bool,
    pub threads: usize,
}

/// Takes items and file contents; `build` turns them into an archive.
pub struct Builder<'a> {
    dedup: Dedup<'a>,
    chunker: Chunker,
    compression: Compression,
    items: ItemsWriter,
    refs: HashMap<BlobId, u64>,
    pub stats: ArchiveStats,
}

impl Builder<'_> {
    /// Chunks and stores a file's content. An error of `reader` (say, a
    /// truncated input) is returned as the error: the caller decides
    /// whether it ends the whole build.
    /// `progress.original` counts the bytes of the whole archive.
    pub fn content(
        &mut self,
        reader: impl Read,
        obs: &mut dyn Observer,
        progress: &mut Progress,
    ) -> Result<Vec<ChunkRef>> {
        let chunker = self.chunker.clone();
        let mut out = Vec::new();
        for chunk in chunker.chunks(reader) {
            if obs.cancelled() {
                return Err(Error::Interrupted);
            }
            let data = chunk.map_err(|e| Error::io("reading the input", e))?;
            let len = data.len() as u32;
            let (id, _) = self
                .dedup
                .store(ObjectType::Data, &data, self.compression)?;
            *self.refs.entry(id).or_insert(0) += 1;
            self.stats.original_size += len as u64;
            progress.original = self.stats.original_size;
            obs.progress(progress);
            out.push(ChunkRef(id, len));
        }
        Ok(out)
    }

    /// Appends an item to the items stream (file items with their chunks).
    pub fn push(&mut self, item: &Item) -> Result<()> {
        self.stats.files += 1;
        let dedup = &mut self.dedup;
        self.items.push(item, &mut |data| {
            Ok(dedup.store(ObjectType::Items, data, ITEMS_COMPRESSION)?.0)
        })
    }
}

/// Runs `fill` on a new builder, then commits the archive. When `fill`
/// fails nothing is committed: the data it stored stays behind as
/// unreferenced blobs for the next run to reuse (or `compact` to free),
/// exactly as after an interrupted `create`. Returns the result and the
/// warnings of the commit (e.g. a manifest copy that could not be removed).
pub fn build(
    repo: &mut Repository,
    opts: &BuildOptions,
    fill: impl FnOnce(&mut Builder) -> Result<()>,
) -> Result<(CreateResult, Vec<String>)> {
    validate_name(&opts.name)?;
    if repo.manifest().find(&opts.name).is_some() {
        return Err(Error::ArchiveExists(opts.name.clone()));
    }
    let started = std::time::Instant::now();
    if !opts.dry_run {
        repo.adopt_orphan_packs()?;
    }
    let time_start = chrono::Utc::now().to_rfc3339();
    let writer = repo.writer(opts.threads);
    let (item_ids, stats, refs) = {
        let mut b = Builder {
            dedup: Dedup {
                repo,
                writer: &writer,
                pending: HashMap::new(),
                dry_run: opts.dry_run,
            },
            chunker: repo.chunker(),
            compression: opts.compression,
            items: ItemsWriter::new(&repo.sealer().keys().chunker_seed),
            refs: HashMap::new(),
            stats: ArchiveStats::default(),
        };
        fill(&mut b)?;
        let Builder {
            mut dedup,
            items,
            refs,
            stats,
            ..
        } = b;
        let (ids, _) = items
            .finish(&mut |data| Ok(dedup.store(ObjectType::Items, data, ITEMS_COMPRESSION)?.0))?;
        (ids, stats, refs)
    };
    let mut archive = Archive {
        version: ARCHIVE_VERSION,
        name: opts.name.clone(),
        hostname: opts
            .hostname
            .clone()
            .unwrap_or_else(crate::repo::lock::hostname),
        username: opts.username.clone().unwrap_or_else(current_user),
        comment: opts.comment.clone(),
        command_line: opts.command_line.clone(),
        time_start: opts.time_start.clone().unwrap_or(time_start),
        time_end: opts
            .time_end
            .clone()
            .unwrap_or_else(|| chrono::Utc::now().to_rfc3339()),
        items: item_ids,
        stats,
        imported_from: opts.imported_from.clone(),
    };
    let summary = writer.finish()?;
    repo.absorb(&summary);
    fill_stats(repo, &mut archive, &refs, summary.stored_bytes);
    let (id, warnings) = if opts.dry_run {
        let id = repo
            .sealer()
            .blob_id(ObjectType::Archive, &archive.encode()?);
        (id, Vec::new())
    } else {
        commit_archive(repo, &archive)?
    };
    let result = CreateResult {
        archive,
        id,
        warnings: warnings.len() as u64,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((result, warnings))
}
