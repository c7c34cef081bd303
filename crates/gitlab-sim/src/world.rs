//! The scripted world: projects, jobs and each job's status timeline.
//!
//! Everything a job shows at time `t` (status, `started_at`, `duration`, …) is derived from its
//! timeline, so one immutable `World` answers consistently for any clock value.

use std::collections::{BTreeSet, HashMap};

use super::trace::{LogPlan, LogSettings};

/// Milliseconds since the Unix epoch.
pub type Ms = i64;

/// Every status GitLab accepts in `scope[]` (`CommitStatus::AVAILABLE_STATUSES`).
pub const STATUSES: [&str; 13] = [
    "created",
    "waiting_for_resource",
    "preparing",
    "waiting_for_callback",
    "pending",
    "running",
    "success",
    "failed",
    "canceling",
    "canceled",
    "skipped",
    "manual",
    "scheduled",
];

/// Completed statuses: once entered, a job never changes again.
pub const FINAL_STATUSES: [&str; 4] = ["success", "failed", "canceled", "skipped"];

pub fn is_final(status: &str) -> bool {
    FINAL_STATUSES.contains(&status)
}

/// Statuses that set `finished_at` in GitLab (`before_transition any => [:success, :failed,
/// :canceled]`); `skipped` does not, so a skipped job has `finished_at: null`.
fn sets_finished_at(status: &str) -> bool {
    matches!(status, "success" | "failed" | "canceled")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectDef {
    pub id: u64,
    pub path_with_namespace: String,
    pub default_branch: String,
    pub archived: bool,
    /// Whether the token's user is a member (what `GET /projects?membership=true` lists).
    pub member: bool,
}

impl ProjectDef {
    pub fn new(id: u64, path_with_namespace: &str) -> Self {
        Self {
            id,
            path_with_namespace: path_with_namespace.to_owned(),
            default_branch: "main".to_owned(),
            archived: false,
            member: true,
        }
    }

    /// The full path of the group the project sits in directly (`""` for none).
    pub fn namespace(&self) -> &str {
        self.path_with_namespace
            .rsplit_once('/')
            .map_or("", |(ns, _)| ns)
    }
}

/// The first group id when every project id is below it; group ids are then
/// `GROUP_ID_BASE, GROUP_ID_BASE + 1, …` in sorted-path order.
pub const GROUP_ID_BASE: u64 = 10_000_000;

/// A group, derived from the namespaces of project paths: `a/b/c` makes groups `a` and `a/b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDef {
    pub id: u64,
    pub full_path: String,
    pub parent_id: Option<u64>,
}

impl GroupDef {
    /// The last path segment (GitLab's `path`; the simulator uses it as `name` too).
    pub fn path(&self) -> &str {
        self.full_path
            .rsplit_once('/')
            .map_or(self.full_path.as_str(), |(_, last)| last)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerDef {
    pub id: u64,
    pub description: String,
    /// `instance_type`, `group_type` or `project_type`.
    pub runner_type: String,
    pub is_shared: bool,
}

impl RunnerDef {
    /// `runner_type` is `instance_type` (shared), `group_type` or `project_type`.
    pub fn new(id: u64, description: &str, runner_type: &str) -> Self {
        let (description, is_shared) = (description.to_owned(), runner_type == "instance_type");
        Self {
            id,
            description,
            runner_type: runner_type.to_owned(),
            is_shared,
        }
    }

    pub fn instance(id: u64) -> Self {
        Self::new(id, &format!("shared-runner-{id}"), "instance_type")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    pub id: u64,
    pub project_id: u64,
    pub pipeline_id: u64,
    pub pipeline_iid: u64,
    pub name: String,
    pub stage: String,
    pub ref_: String,
    pub tag: bool,
    pub allow_failure: bool,
    /// Pipeline source: `push`, `merge_request_event`, `schedule`, …
    pub source: String,
    pub created_at_ms: Ms,
    /// `(at, status)`, sorted by time; the first entry is at `created_at_ms`.
    pub timeline: Vec<(Ms, String)>,
    /// Shown when the job ends `failed` (`unknown_failure` when `None`).
    pub failure_reason: Option<String>,
    /// Shown from `started_at` on.
    pub runner: Option<RunnerDef>,
    pub tag_list: Vec<String>,
}

impl JobPlan {
    /// A job on `main` with defaults for the fields tests rarely care about.
    pub fn new(
        id: u64,
        project_id: u64,
        pipeline_id: u64,
        name: &str,
        stage: &str,
        timeline: &[(Ms, &str)],
    ) -> Self {
        Self {
            id,
            project_id,
            pipeline_id,
            pipeline_iid: pipeline_id,
            name: name.to_owned(),
            stage: stage.to_owned(),
            ref_: "main".to_owned(),
            tag: false,
            allow_failure: false,
            source: "push".to_owned(),
            created_at_ms: timeline.first().map_or(0, |e| e.0),
            timeline: timeline.iter().map(|&(t, s)| (t, s.to_owned())).collect(),
            failure_reason: None,
            runner: Some(RunnerDef::instance(1)),
            tag_list: Vec::new(),
        }
    }

    /// Timeline entries that have happened by `t`.
    fn until(&self, t: Ms) -> &[(Ms, String)] {
        let n = self.timeline.partition_point(|e| e.0 <= t);
        &self.timeline[..n]
    }

    fn first(&self, t: Ms, pred: impl Fn(&str) -> bool) -> Option<Ms> {
        self.until(t).iter().find(|e| pred(&e.1)).map(|e| e.0)
    }

    pub fn visible_at(&self, t: Ms) -> bool {
        self.created_at_ms <= t
    }

    /// `None` while the job does not exist yet.
    pub fn status_at(&self, t: Ms) -> Option<&str> {
        if !self.visible_at(t) {
            return None;
        }
        self.until(t).last().map(|e| e.1.as_str())
    }

    /// The first time it entered `running`.
    pub fn started_at(&self, t: Ms) -> Option<Ms> {
        self.first(t, |s| s == "running")
    }

    /// The time it entered success, failed or canceled (never set for skipped, as in GitLab).
    pub fn finished_at(&self, t: Ms) -> Option<Ms> {
        self.first(t, sets_finished_at)
    }

    /// The time it entered any final status, skipped included.
    pub fn completed_at(&self, t: Ms) -> Option<Ms> {
        self.first(t, is_final)
    }

    /// The last time it entered `pending` before starting (or up to now if it never started).
    pub fn queued_at(&self, t: Ms) -> Option<Ms> {
        let limit = self.started_at(t).unwrap_or(Ms::MAX);
        let mut entries = self
            .until(t)
            .iter()
            .filter(|e| e.1 == "pending" && e.0 <= limit);
        entries.next_back().map(|e| e.0)
    }

    /// `(finished_at or now) - started_at`.
    pub fn duration_ms(&self, t: Ms) -> Option<Ms> {
        let started = self.started_at(t)?;
        Some(self.finished_at(t).unwrap_or(t) - started)
    }

    /// `(started_at or now) - queued_at`: keeps growing for a job that ended without starting.
    pub fn queued_duration_ms(&self, t: Ms) -> Option<Ms> {
        let queued = self.queued_at(t)?;
        Some(self.started_at(t).unwrap_or(t) - queued)
    }

    pub fn runner_at(&self, t: Ms) -> Option<&RunnerDef> {
        self.started_at(t).and(self.runner.as_ref())
    }

    /// Time of the latest change by `t`.
    pub fn updated_at(&self, t: Ms) -> Ms {
        self.until(t).last().map_or(self.created_at_ms, |e| e.0)
    }

    fn check(&self) -> Result<(), &'static str> {
        let first = self.timeline.first().ok_or("empty timeline")?;
        if first.0 != self.created_at_ms {
            return Err("first entry is not at created_at");
        }
        if self.timeline.windows(2).any(|w| w[1].0 < w[0].0) {
            return Err("entries out of order");
        }
        let last = self.timeline.len() - 1;
        if self.timeline[..last].iter().any(|e| is_final(&e.1)) {
            return Err("changes after a final status");
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorldError {
    #[error("duplicate project id {0}")]
    DuplicateProject(u64),
    #[error("job {0} belongs to unknown project {1}")]
    UnknownProject(u64, u64),
    #[error("duplicate job id {0}")]
    DuplicateJob(u64),
    #[error("job {0} was created before a job with a lower id (ids grow with creation)")]
    IdOrder(u64),
    #[error("job {0}: {1}")]
    Timeline(u64, &'static str),
    #[error("no project with id {0}")]
    NoSuchProject(u64),
    #[error("duplicate project path {0}")]
    DuplicatePath(String),
    #[error("project id {0} is already a group id")]
    GroupIdTaken(u64),
    #[error("no job with id {0}")]
    NoSuchJob(u64),
    #[error("unknown failure class {0:?}")]
    UnknownClass(String),
}

/// The checks of [`World::new`] on jobs sorted by id.
fn check_jobs(project_ids: &[u64], jobs: &[JobPlan]) -> Result<(), WorldError> {
    for (i, job) in jobs.iter().enumerate() {
        if project_ids.binary_search(&job.project_id).is_err() {
            return Err(WorldError::UnknownProject(job.id, job.project_id));
        }
        job.check().map_err(|e| WorldError::Timeline(job.id, e))?;
        if let Some(prev) = i.checked_sub(1).map(|p| &jobs[p]) {
            if prev.id == job.id {
                return Err(WorldError::DuplicateJob(job.id));
            }
            if prev.created_at_ms > job.created_at_ms {
                return Err(WorldError::IdOrder(job.id));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct World {
    projects: Vec<ProjectDef>,
    /// Sorted by id, which also sorts by `created_at`.
    jobs: Vec<JobPlan>,
    project_idx: HashMap<u64, usize>,
    project_by_path: HashMap<String, usize>,
    by_project: HashMap<u64, Vec<usize>>,
    by_pipeline: HashMap<u64, Vec<usize>>,
    /// Ascending id; only ever grows, so a group keeps its id for the world's lifetime.
    groups: Vec<GroupDef>,
    group_by_path: HashMap<String, usize>,
    /// Job logs: their seed, sizes, per-job changes and trace knobs.
    logs: LogSettings,
}

impl World {
    /// Checks that the world could exist in GitLab: one global id sequence growing with creation
    /// time, and timelines that never leave a final status.
    pub fn new(projects: Vec<ProjectDef>, mut jobs: Vec<JobPlan>) -> Result<Self, WorldError> {
        let mut ids: Vec<u64> = projects.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(WorldError::DuplicateProject(w[0]));
        }
        jobs.sort_by_key(|j| j.id);
        check_jobs(&ids, &jobs)?;
        Ok(Self::from_valid(projects, jobs))
    }

    /// Builds the indexes; `jobs` must already satisfy the checks of [`World::new`].
    pub(crate) fn from_valid(projects: Vec<ProjectDef>, jobs: Vec<JobPlan>) -> Self {
        let mut world = Self {
            project_idx: HashMap::new(),
            project_by_path: HashMap::new(),
            projects,
            jobs,
            by_project: HashMap::new(),
            by_pipeline: HashMap::new(),
            groups: Vec::new(),
            group_by_path: HashMap::new(),
            logs: LogSettings::default(),
        };
        world.index_projects();
        world.index_jobs();
        world
    }

    fn index_projects(&mut self) {
        let projects = self.projects.iter().enumerate();
        self.project_idx = projects.clone().map(|(i, p)| (p.id, i)).collect();
        self.project_by_path = projects
            .map(|(i, p)| (p.path_with_namespace.to_lowercase(), i))
            .collect();
        self.add_groups();
    }

    fn index_jobs(&mut self) {
        self.by_project.clear();
        self.by_pipeline.clear();
        for (i, job) in self.jobs.iter().enumerate() {
            self.by_project.entry(job.project_id).or_default().push(i);
            self.by_pipeline.entry(job.pipeline_id).or_default().push(i);
        }
    }

    /// Gives every namespace prefix of a project path that has no group yet a new group, with
    /// ids counting up in sorted-path order (so a parent always comes before its subgroups).
    fn add_groups(&mut self) {
        let mut missing = BTreeSet::new();
        for p in &self.projects {
            let ns = p.namespace();
            let prefixes = ns.match_indices('/').map(|(i, _)| &ns[..i]);
            for prefix in prefixes.chain((!ns.is_empty()).then_some(ns)) {
                if !self.group_by_path.contains_key(&prefix.to_lowercase()) {
                    missing.insert(prefix.to_owned());
                }
            }
        }
        // Above every project id, so the two id spaces never meet.
        let max_project = self.projects.iter().map(|p| p.id + 1).max().unwrap_or(0);
        let first =
            (self.groups.last().map(|g| g.id + 1)).unwrap_or(GROUP_ID_BASE.max(max_project));
        for (id, full_path) in (first..).zip(missing) {
            let parent_id = full_path
                .rsplit_once('/')
                .and_then(|(parent, _)| self.group_by_path.get(&parent.to_lowercase()))
                .map(|&i| self.groups[i].id);
            self.group_by_path
                .insert(full_path.to_lowercase(), self.groups.len());
            self.groups.push(GroupDef {
                id,
                full_path,
                parent_id,
            });
        }
    }

    /// Every group, ascending id.
    pub fn groups(&self) -> &[GroupDef] {
        &self.groups
    }

    pub fn group(&self, id: u64) -> Option<&GroupDef> {
        // Ids are consecutive from the first group's.
        let first = self.groups.first()?.id;
        let i = usize::try_from(id.checked_sub(first)?).ok()?;
        self.groups.get(i)
    }

    /// Resolves the `:id` of `/groups/:id/…` (percent-decoded): digits are an id, anything else a
    /// full path, matched case-insensitively.
    pub fn find_group(&self, id_or_path: &str) -> Option<&GroupDef> {
        if !id_or_path.is_empty() && id_or_path.bytes().all(|b| b.is_ascii_digit()) {
            return id_or_path.parse().ok().and_then(|id| self.group(id));
        }
        let i = self.group_by_path.get(&id_or_path.to_lowercase())?;
        Some(&self.groups[*i])
    }

    fn project_mut(&mut self, id: u64) -> Result<&mut ProjectDef, WorldError> {
        let i = *self
            .project_idx
            .get(&id)
            .ok_or(WorldError::NoSuchProject(id))?;
        Ok(&mut self.projects[i])
    }

    pub fn set_archived(&mut self, project_id: u64, archived: bool) -> Result<(), WorldError> {
        self.project_mut(project_id)?.archived = archived;
        Ok(())
    }

    pub fn set_member(&mut self, project_id: u64, member: bool) -> Result<(), WorldError> {
        self.project_mut(project_id)?.member = member;
        Ok(())
    }

    /// Renames or transfers a project (same id, new `path_with_namespace`).
    pub fn rename_project(&mut self, project_id: u64, path: &str) -> Result<(), WorldError> {
        if self.project_by_path.contains_key(&path.to_lowercase()) {
            return Err(WorldError::DuplicatePath(path.to_owned()));
        }
        self.project_mut(project_id)?.path_with_namespace = path.to_owned();
        self.index_projects();
        Ok(())
    }

    /// Deletes a project and its jobs, as GitLab does; its groups stay.
    pub fn remove_project(&mut self, project_id: u64) -> Result<ProjectDef, WorldError> {
        let i = *self
            .project_idx
            .get(&project_id)
            .ok_or(WorldError::NoSuchProject(project_id))?;
        let removed = self.projects.remove(i);
        self.jobs.retain(|j| j.project_id != project_id);
        self.index_projects();
        self.index_jobs();
        Ok(removed)
    }

    /// Adds a project without jobs; groups for new namespaces get the next free ids.
    pub fn add_project(&mut self, project: ProjectDef) -> Result<(), WorldError> {
        if self.project_idx.contains_key(&project.id) {
            return Err(WorldError::DuplicateProject(project.id));
        }
        if self.group(project.id).is_some() {
            return Err(WorldError::GroupIdTaken(project.id));
        }
        let path = project.path_with_namespace.to_lowercase();
        if self.project_by_path.contains_key(&path) {
            return Err(WorldError::DuplicatePath(project.path_with_namespace));
        }
        self.projects.push(project);
        self.index_projects();
        Ok(())
    }

    /// Adds jobs of existing projects, with the checks of [`World::new`] on the whole history
    /// (so new ids must be above the existing ones when created later).
    pub fn add_jobs(&mut self, jobs: Vec<JobPlan>) -> Result<(), WorldError> {
        let mut all = self.jobs.clone();
        all.extend(jobs);
        all.sort_by_key(|j| j.id);
        let mut ids: Vec<u64> = self.projects.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        check_jobs(&ids, &all)?;
        self.jobs = all;
        self.index_jobs();
        Ok(())
    }

    /// The world's log settings (seed, profile, per-job changes, trace knobs).
    pub fn logs(&self) -> &LogSettings {
        &self.logs
    }

    pub fn logs_mut(&mut self) -> &mut LogSettings {
        &mut self.logs
    }

    /// The plan of a job's log as the trace endpoint serves it (`None`: no such job).
    pub fn log_plan(&self, job_id: u64) -> Option<LogPlan> {
        let job = self.job(job_id)?;
        let project = self.project(job.project_id)?;
        Some(self.logs.plan(job, &project.path_with_namespace))
    }

    /// The class a correct exporter gives a failed job with the world's
    /// [`LogLimits`](crate::LogLimits): `unavailable` when its trace can never be read. `None` for a job
    /// that is not failed.
    pub fn failure_class(&self, job: &JobPlan) -> Option<&'static str> {
        if job.timeline.last().is_none_or(|e| e.1 != "failed") {
            return None;
        }
        let unreadable = self.logs.denied.contains(&job.project_id)
            || self
                .logs
                .standing
                .get(&job.id)
                .is_some_and(|f| f.unreadable());
        if unreadable {
            return Some(super::trace::CLASS_UNAVAILABLE);
        }
        let project = self.project(job.project_id)?;
        let plan = self.logs.plan(job, &project.path_with_namespace);
        Some(plan.class(self.logs.limits))
    }

    /// Retries job `job_id` at `at_ms`, as GitLab's "Retry" does: a new job with the next id,
    /// the same name, stage and pipeline, pending a second later, running 5 s after that and
    /// ending `outcome` (`success` or `failed`, with `script_failure`) two minutes later.
    /// `at_ms` must not be before the newest job's creation (ids grow with creation time).
    pub fn retry_job(&mut self, job_id: u64, at_ms: Ms, outcome: &str) -> Result<u64, WorldError> {
        let original = self
            .job(job_id)
            .ok_or(WorldError::NoSuchJob(job_id))?
            .clone();
        let id = self.jobs.last().map_or(job_id, |j| j.id) + 1;
        let (pending, running) = (at_ms + 1_000, at_ms + 6_000);
        let mut job = JobPlan {
            id,
            created_at_ms: at_ms,
            timeline: vec![
                (at_ms, "created".to_owned()),
                (pending, "pending".to_owned()),
                (running, "running".to_owned()),
                (running + 120_000, outcome.to_owned()),
            ],
            failure_reason: (outcome == "failed").then(|| "script_failure".to_owned()),
            allow_failure: original.allow_failure,
            ..original
        };
        if job.runner.is_none() {
            job.runner = Some(RunnerDef::instance(1));
        }
        self.add_jobs(vec![job])?;
        Ok(id)
    }

    pub fn projects(&self) -> &[ProjectDef] {
        &self.projects
    }

    /// All jobs, ascending id.
    pub fn jobs(&self) -> &[JobPlan] {
        &self.jobs
    }

    pub fn project(&self, id: u64) -> Option<&ProjectDef> {
        self.project_idx.get(&id).map(|&i| &self.projects[i])
    }

    /// Resolves the `:id` of an API path (already percent-decoded): digits are an id, anything
    /// else a full path, matched case-insensitively like GitLab does.
    pub fn find_project(&self, id_or_path: &str) -> Option<&ProjectDef> {
        if !id_or_path.is_empty() && id_or_path.bytes().all(|b| b.is_ascii_digit()) {
            return id_or_path.parse().ok().and_then(|id| self.project(id));
        }
        let i = self.project_by_path.get(&id_or_path.to_lowercase())?;
        Some(&self.projects[*i])
    }

    pub fn job(&self, id: u64) -> Option<&JobPlan> {
        let i = self.jobs.binary_search_by_key(&id, |j| j.id).ok()?;
        Some(&self.jobs[i])
    }

    /// A project's jobs, ascending id.
    pub fn project_jobs(&self, project_id: u64) -> impl DoubleEndedIterator<Item = &JobPlan> {
        self.project_indexes(project_id)
            .iter()
            .map(|&i| &self.jobs[i])
    }

    pub(crate) fn project_indexes(&self, project_id: u64) -> &[usize] {
        self.by_project.get(&project_id).map_or(&[], Vec::as_slice)
    }

    /// A pipeline's jobs (retries included), ascending id.
    pub fn pipeline_jobs(&self, pipeline_id: u64) -> impl Iterator<Item = &JobPlan> {
        let idx = self
            .by_pipeline
            .get(&pipeline_id)
            .map_or(&[][..], Vec::as_slice);
        idx.iter().map(|&i| &self.jobs[i])
    }

    /// The pipeline's status at `t` from its latest (non-retried) visible jobs, following
    /// GitLab's `Ci::Status::Composite` precedence.
    pub fn pipeline_status(&self, pipeline_id: u64, t: Ms) -> &'static str {
        let visible: Vec<&JobPlan> = self
            .pipeline_jobs(pipeline_id)
            .filter(|j| j.visible_at(t))
            .collect();
        let mut seen: Vec<&str> = Vec::new();
        for job in &visible {
            // A later job with the same name is its retry; only the latest counts.
            if visible.iter().any(|o| o.name == job.name && o.id > job.id) {
                continue;
            }
            let status = job.status_at(t).unwrap_or("created");
            seen.push(match status {
                "failed" | "canceled" if job.allow_failure => "success",
                "manual" if job.allow_failure => "skipped",
                s if STATUSES.contains(&s) => s,
                _ => "pending", // a status this GitLab version does not know yet
            });
        }
        let only = |set: &[&str]| seen.iter().all(|s| set.contains(s));
        let any = |set: &[&str]| seen.iter().any(|s| set.contains(s));
        match () {
            _ if only(&["skipped"]) => "skipped",
            _ if only(&["success", "skipped"]) => "success",
            _ if only(&["created", "skipped"]) => "created",
            _ if only(&["preparing", "success", "skipped"]) => "preparing",
            _ if only(&["canceled", "success", "skipped"]) => "canceled",
            _ if only(&["pending", "created", "skipped"]) => "pending",
            _ if any(&["running", "pending", "canceling"]) => "running",
            _ if any(&["waiting_for_resource"]) => "waiting_for_resource",
            _ if any(&["waiting_for_callback"]) => "waiting_for_callback",
            _ if any(&["manual"]) => "manual",
            _ if any(&["scheduled"]) => "scheduled",
            _ if any(&["preparing"]) => "preparing",
            _ if any(&["created"]) => "running",
            _ => "failed",
        }
    }

    /// When the pipeline last changed by `t`.
    pub fn pipeline_updated_at(&self, pipeline_id: u64, t: Ms) -> Ms {
        let jobs = self.pipeline_jobs(pipeline_id).filter(|j| j.visible_at(t));
        jobs.map(|j| j.updated_at(t)).max().unwrap_or(0)
    }
}
