//! Which projects `[[groups]]` and `discovery.membership` name right now: one pass over GitLab's
//! project lists, filtered by `discovery.include`/`exclude` and the archived flag.
//!
//! A pass that fails part-way reports what it found and which sources failed: the scheduler
//! then adds what is new but keeps every project a failed source listed before, so a GitLab
//! hiccup (or one broken `[[groups]]` entry) never drops a project.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;
use tracing::warn;

use crate::config::{DiscoverySettings, Group, PathFilter};
use crate::gitlab::pager::{PageError, Pager, ProjectList};
use crate::gitlab::{GitlabClient, ProjectsRequest};
use crate::metrics::Metrics;

/// Pages per source and pass, at most (100,000 projects): only a safety net against a Link loop
/// that never repeats.
const MAX_PAGES: usize = 1_000;

/// A project found by discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: u64,
    pub path: String,
    pub default_branch: Option<String>,
    /// Which sources listed it (indices: the `[[groups]]` entries in order, then membership).
    pub sources: BTreeSet<usize>,
}

/// A source that could not be listed to its end.
#[derive(Debug, Error)]
#[error("{source_name}: {error}")]
pub struct DiscoveryError {
    pub source_name: String,
    #[source]
    pub error: PageError,
}

/// What one pass found.
#[derive(Debug, Default)]
pub struct Pass {
    /// By project id.
    pub projects: BTreeMap<u64, Found>,
    /// Every source answered completely.
    pub complete: bool,
    /// The sources that did not (a project they listed before may still exist).
    pub failed: BTreeSet<usize>,
    /// GitLab API requests sent.
    pub requests: usize,
    /// `limits.max_projects` was reached: the sources listed more projects than are watched
    /// (the first ones in listing order are kept: sources in order, ids ascending).
    pub capped: bool,
}

/// Lists every source once, finding at most `max_projects` projects (each page at most
/// `PER_PAGE` long, each source at most `MAX_PAGES` pages): whatever GitLab answers, a pass
/// holds a bounded number of projects.
pub async fn discover(
    client: &GitlabClient,
    metrics: &Metrics,
    cfg: &DiscoverySettings,
    max_projects: usize,
) -> Pass {
    let mut pass = Pass {
        complete: true,
        ..Pass::default()
    };
    let mut sources: Vec<(String, ProjectsRequest<'_>)> = Vec::new();
    let group_ids: Vec<String> = cfg.groups.iter().map(Group::api_id).collect();
    for (g, api_id) in cfg.groups.iter().zip(&group_ids) {
        sources.push((
            g.to_string(),
            ProjectsRequest::Group {
                group: api_id,
                include_subgroups: g.include_subgroups,
                with_archived: cfg.archived,
            },
        ));
    }
    if cfg.membership {
        sources.push((
            "membership".to_string(),
            ProjectsRequest::Membership {
                with_archived: cfg.archived,
            },
        ));
    }
    let limit = Limit {
        max_projects,
        filter: &cfg.filter,
        with_archived: cfg.archived,
    };
    for (index, (name, first)) in sources.into_iter().enumerate() {
        if pass.capped {
            break;
        }
        // The client's own warnings (a retry, a rate limit) name the source through this span.
        let span = tracing::info_span!("discovery", source = %name);
        let listed = list(client, metrics, index, &name, first, &limit, &mut pass);
        if let Err(e) = tracing::Instrument::instrument(listed, span).await {
            warn!(source = %e.source_name, endpoint = e.error.endpoint(), error = %e.error,
                "project discovery incomplete; the projects this source listed before are kept");
            if let Some(kind) = e.error.uncounted_kind() {
                metrics.api_error(kind);
            }
            metrics.api_error("discovery");
            pass.complete = false;
            pass.failed.insert(index);
        }
    }
    if pass.capped {
        warn!(
            max_projects,
            "discovery found more projects than limits.max_projects; only the first are watched"
        );
    }
    metrics.set_project_limit_reached(pass.capped);
    pass
}

/// What a listed project must pass to be kept.
struct Limit<'a> {
    max_projects: usize,
    filter: &'a PathFilter,
    with_archived: bool,
}

async fn list(
    client: &GitlabClient,
    metrics: &Metrics,
    index: usize,
    name: &str,
    first: ProjectsRequest<'_>,
    limit: &Limit<'_>,
    pass: &mut Pass,
) -> Result<(), DiscoveryError> {
    let fail = |error| DiscoveryError {
        source_name: name.to_string(),
        error,
    };
    let mut pages = Pager::new(ProjectList { client, first }, MAX_PAGES);
    while let Some(page) = pages.next().await.map_err(fail)? {
        pass.requests += 1;
        if page.bad_items > 0 {
            warn!(
                source = name,
                items = page.bad_items,
                "skipped list items that are not valid projects"
            );
            for _ in 0..page.bad_items {
                metrics.api_error("bad_project");
            }
        }
        for p in page.projects {
            // GitLab filtered archived ones already; this only guards an older or odd server.
            if (p.archived && !limit.with_archived) || !limit.filter.allows(&p.path_with_namespace)
            {
                continue;
            }
            if pass.projects.len() >= limit.max_projects && !pass.projects.contains_key(&p.id) {
                pass.capped = true;
                return Ok(());
            }
            pass.projects
                .entry(p.id)
                .or_insert(Found {
                    id: p.id,
                    path: p.path_with_namespace,
                    default_branch: p.default_branch,
                    sources: BTreeSet::new(),
                })
                .sources
                .insert(index);
        }
    }
    Ok(())
}
