//! Job Hooks as GitLab sends them: one event per status change of a job (its timeline entries,
//! the creation included), rendered as `Gitlab::DataBuilder::Build` renders the job at that
//! moment, and delivered by HTTP POST with GitLab's headers, through knobs that drop, duplicate,
//! delay and so reorder deliveries.
//!
//! Three ways in: [`job_hook_events`] / [`plan_job_hooks`] list events and planned deliveries
//! without any HTTP (for property tests); [`HookSender::deliver_until`] sends what is due by a
//! given time and returns once it is sent (tests that move a manual clock);
//! [`HookSender::spawn`] watches the simulator's clock in the background and sends each
//! delivery when it falls due.
//!
//! The world holds no trigger jobs (bridges), so nothing needs leaving out for them: every job
//! is a build and sends events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::render::{TITLES, USERS, hook_time, iso_seconds, mix, sha};
use super::world::{JobPlan, Ms, World, is_final};
use super::{HookAlertStatus, Simulator, lock};

/// The version the simulated GitLab claims in `User-Agent`.
pub const HOOK_GITLAB_VERSION: &str = "17.6.0";
/// How long GitLab waits for a hook's answer before it counts a failure.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`HookSender::spawn`]'s task looks at the clock.
const TICK: Duration = Duration::from_millis(50);

/// How deliveries misbehave. Each event's fate is drawn from `seed` and the event's identity
/// alone, so it does not depend on how time is stepped.
#[derive(Debug, Clone, PartialEq)]
pub struct HookKnobs {
    /// Probability that an event is never sent.
    pub drop: f64,
    /// Probability that a (not dropped) event is sent twice, each copy with its own delay.
    pub duplicate: f64,
    /// Each delivery waits a uniform delay in `[0, max_delay]` after the change (which also
    /// reorders deliveries).
    pub max_delay: Duration,
    /// Whether this GitLab is new enough to add the `*_iso` time twins.
    pub iso_times: bool,
    pub seed: u64,
}

impl Default for HookKnobs {
    fn default() -> Self {
        Self {
            drop: 0.0,
            duplicate: 0.0,
            max_delay: Duration::ZERO,
            iso_times: true,
            seed: 0,
        }
    }
}

/// Which projects send hooks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HookProjects {
    /// Every project.
    #[default]
    All,
    /// These projects only.
    Only(BTreeSet<u64>),
    /// Projects with a hook registered through the hooks API (or
    /// [`Simulator::add_project_hook`]) for this sender's URL, with `job_events`, that GitLab
    /// would execute now (not disabled); its `token` is sent instead of the sender's secret.
    Registered,
}

/// One status change of a job, and the payload GitLab sends for it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobHookEvent {
    pub project_id: u64,
    pub job_id: u64,
    /// The change's index in the job's timeline.
    pub index: usize,
    /// `build_status` of the payload.
    pub status: String,
    /// When the change happened.
    pub at_ms: Ms,
    /// `Idempotency-Key`: one per event, the same on every copy.
    pub idempotency_key: String,
    pub payload: Value,
}

/// One delivery the knobs planned.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedDelivery {
    pub event: Arc<JobHookEvent>,
    /// When it is sent: the change's time plus its delay.
    pub due_ms: Ms,
    /// 0, or 1 for the second copy of a duplicated event.
    pub copy: u8,
}

/// The events of a time window and what the knobs make of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HookPlan {
    /// In order of change (time, job id, timeline index).
    pub events: Vec<Arc<JobHookEvent>>,
    /// In order of sending (due time, then change order).
    pub deliveries: Vec<PlannedDelivery>,
    pub dropped: u64,
    pub duplicated: u64,
}

fn secs(ms: Option<Ms>) -> Option<f64> {
    ms.map(|m| m as f64 / 1000.0)
}

/// A UUID-shaped (version 4 layout) string from two numbers.
fn uuid_like(a: u64, b: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

fn event_seed(seed: u64, job_id: u64, index: usize) -> u64 {
    mix(seed ^ mix(job_id ^ mix(index as u64 ^ 0x4a0b)))
}

/// The payload GitLab sends for change `index` of `job`'s timeline: `Gitlab::DataBuilder::Build`
/// of the job as it was right after that change. `None` if there is no such change or project.
///
/// The creation event follows `Ci::ExecutePipelineBuildHooksWorker`: no runner, times,
/// durations or `build_failure_reason` (null). Every later event has `build_failure_reason`
/// `unknown_failure` unless the job failed with a reason, as GitLab's enum reads a missing one.
pub fn job_hook_payload(
    world: &World,
    job: &JobPlan,
    index: usize,
    ext: &str,
    iso_times: bool,
) -> Option<Value> {
    let (t, status) = job.timeline.get(index)?;
    let (t, status) = (*t, status.as_str());
    let project = world.project(job.project_id)?;
    // The job as of the change: later entries at the same millisecond must not show yet.
    let mut then = job.clone();
    then.timeline.truncate(index + 1);
    // Jobs the world creates already skipped have no creation event of their own.
    let creation = index == 0 && status == "created";
    let failure_reason = match status {
        _ if creation => None,
        "failed" => Some(job.failure_reason.as_deref().unwrap_or("unknown_failure")),
        _ => Some("unknown_failure"),
    };
    let retries = world
        .pipeline_jobs(job.pipeline_id)
        .filter(|o| o.name == job.name && o.id < job.id && o.visible_at(t))
        .count();
    let runner = then.runner_at(t).map(|r| {
        json!({
            "id": r.id, "description": r.description, "runner_type": r.runner_type,
            "active": true, "is_shared": r.is_shared, "tags": job.tag_list,
        })
    });
    let (started, finished) = (then.started_at(t), then.finished_at(t));
    let path = &project.path_with_namespace;
    let mut v = json!({
        "object_kind": "build", "ref": job.ref_, "tag": job.tag,
        "before_sha": "0000000000000000000000000000000000000000", "sha": sha(job.pipeline_id),
        "retries_count": retries,
        "build_id": job.id, "build_name": job.name, "build_stage": job.stage,
        "build_status": status, "build_created_at": hook_time(job.created_at_ms),
        "build_started_at": started.map(hook_time), "build_finished_at": finished.map(hook_time),
        "build_duration": secs(then.duration_ms(t)),
        "build_queued_duration": secs(then.queued_duration_ms(t)),
        "build_allow_failure": job.allow_failure, "build_failure_reason": failure_reason,
        "pipeline_id": job.pipeline_id, "runner": runner,
        "project_id": project.id, "project_name": path.split('/').collect::<Vec<_>>().join(" / "),
        "user": user_json(job.pipeline_id),
        "commit": commit_json(world, job, t, ext, iso_times),
        "repository": repository_json(path, ext),
        "project": project_hook_attrs(world, project.id, ext),
        "environment": null,
    });
    if iso_times {
        v["build_created_at_iso"] = json!(iso_seconds(job.created_at_ms));
        v["build_started_at_iso"] = json!(started.map(iso_seconds));
        v["build_finished_at_iso"] = json!(finished.map(iso_seconds));
    }
    Some(v)
}

/// `User#hook_attrs` of the pipeline's user (the same made-up user the jobs API shows).
fn user_json(pipeline: u64) -> Value {
    let user = mix(pipeline ^ 0x55) as usize % USERS.len();
    let (username, name) = USERS[user];
    let avatar = &sha(pipeline)[..32];
    json!({
        "id": user + 1, "name": name, "username": username,
        "avatar_url": format!("https://www.gravatar.com/avatar/{avatar}?s=80&d=identicon"),
        "email": format!("{username}@example.com"),
    })
}

/// The `commit` block: the pipeline at `t` (`commit.id` is the pipeline id, as in GitLab).
/// Its `duration` is simplified to first start → last completion, in whole seconds.
fn commit_json(world: &World, job: &JobPlan, t: Ms, ext: &str, iso_times: bool) -> Value {
    let pipeline = job.pipeline_id;
    let status = world.pipeline_status(pipeline, t);
    let jobs: Vec<&JobPlan> = world
        .pipeline_jobs(pipeline)
        .filter(|j| j.visible_at(t))
        .collect();
    let started = jobs.iter().filter_map(|j| j.started_at(t)).min();
    let finished = is_final(status)
        .then(|| jobs.iter().filter_map(|j| j.completed_at(t)).max())
        .flatten();
    let user = mix(pipeline ^ 0x55) as usize % USERS.len();
    let (username, name) = USERS[user];
    let title = TITLES[mix(pipeline) as usize % TITLES.len()];
    let mut v = json!({
        "id": pipeline, "name": null, "sha": sha(pipeline), "message": format!("{title}\n"),
        "author_name": name, "author_email": format!("{username}@example.com"),
        "author_url": format!("{ext}/{username}"), "status": status,
        "duration": started.zip(finished).map(|(s, f)| (f - s) / 1000),
        "started_at": started.map(hook_time), "finished_at": finished.map(hook_time),
    });
    if iso_times {
        v["started_at_iso"] = json!(started.map(iso_seconds));
        v["finished_at_iso"] = json!(finished.map(iso_seconds));
    }
    v
}

fn repository_json(path: &str, ext: &str) -> Value {
    let name = path.rsplit_once('/').map_or(path, |(_, n)| n);
    let host = ext.split("://").nth(1).unwrap_or(ext);
    json!({
        "name": name, "url": format!("git@{host}:{path}.git"), "description": "",
        "homepage": format!("{ext}/{path}"), "git_http_url": format!("{ext}/{path}.git"),
        "git_ssh_url": format!("git@{host}:{path}.git"), "visibility_level": 0,
    })
}

/// `Project#hook_attrs(backward: false)`.
fn project_hook_attrs(world: &World, project_id: u64, ext: &str) -> Value {
    let Some(p) = world.project(project_id) else {
        return Value::Null;
    };
    let path = &p.path_with_namespace;
    let name = path.rsplit_once('/').map_or(path.as_str(), |(_, n)| n);
    let host = ext.split("://").nth(1).unwrap_or(ext);
    let namespace = world.find_group(p.namespace()).map_or("", |g| g.path());
    json!({
        "id": p.id, "name": name, "description": "", "web_url": format!("{ext}/{path}"),
        "avatar_url": null, "git_ssh_url": format!("git@{host}:{path}.git"),
        "git_http_url": format!("{ext}/{path}.git"), "namespace": namespace,
        "visibility_level": 0, "path_with_namespace": path,
        "default_branch": p.default_branch, "ci_config_path": null,
    })
}

/// The timeline entries of every job in `(from_ms, to_ms]`, in change order; `known(job_id)`
/// false means the job is new to the caller, whose entries up to `to_ms` all count.
fn changes(
    world: &World,
    from_ms: Ms,
    to_ms: Ms,
    known: impl Fn(u64) -> bool,
) -> Vec<(&JobPlan, usize)> {
    let jobs = world.jobs();
    // Ids grow with creation time, so the jobs that exist by `to_ms` are a prefix.
    let end = jobs.partition_point(|j| j.created_at_ms <= to_ms);
    let mut out = Vec::new();
    for job in &jobs[..end] {
        let tl = &job.timeline;
        if known(job.id) && tl.last().is_some_and(|e| e.0 <= from_ms) {
            continue; // the common case: nothing new
        }
        let start = if known(job.id) {
            tl.partition_point(|e| e.0 <= from_ms)
        } else {
            0
        };
        let stop = tl.partition_point(|e| e.0 <= to_ms);
        out.extend((start..stop).map(|i| (job, i)));
    }
    out.sort_by_key(|(j, i)| (j.timeline[*i].0, j.id, *i));
    out
}

fn make_event(
    world: &World,
    job: &JobPlan,
    index: usize,
    ext: &str,
    knobs: &HookKnobs,
) -> Option<JobHookEvent> {
    let payload = job_hook_payload(world, job, index, ext, knobs.iso_times)?;
    let key = event_seed(knobs.seed, job.id, index);
    Some(JobHookEvent {
        project_id: job.project_id,
        job_id: job.id,
        index,
        status: job.timeline[index].1.clone(),
        at_ms: job.timeline[index].0,
        idempotency_key: uuid_like(mix(key ^ 0x1d), mix(key ^ 0x2e)),
        payload,
    })
}

/// Every job hook event of a change in `(from_ms, to_ms]`, in change order (time, job id,
/// timeline index), each with its payload; `ext` is GitLab's external URL.
pub fn job_hook_events(
    world: &World,
    from_ms: Ms,
    to_ms: Ms,
    ext: &str,
    knobs: &HookKnobs,
) -> Vec<JobHookEvent> {
    changes(world, from_ms, to_ms, |_| true)
        .into_iter()
        .filter_map(|(job, i)| make_event(world, job, i, ext, knobs))
        .collect()
}

/// What the knobs make of the events of `(from_ms, to_ms]`: which are dropped, which sent
/// twice, and when each delivery is due (it may be after `to_ms`).
pub fn plan_job_hooks(
    world: &World,
    from_ms: Ms,
    to_ms: Ms,
    ext: &str,
    knobs: &HookKnobs,
) -> HookPlan {
    let mut plan = HookPlan::default();
    for event in job_hook_events(world, from_ms, to_ms, ext, knobs) {
        plan_event(Arc::new(event), knobs, &mut plan);
    }
    plan.deliveries.sort_by_key(order_key);
    plan
}

type OrderKey = (Ms, Ms, u64, usize, u8);

fn order_key(d: &PlannedDelivery) -> OrderKey {
    let e = &d.event;
    (d.due_ms, e.at_ms, e.job_id, e.index, d.copy)
}

fn plan_event(event: Arc<JobHookEvent>, knobs: &HookKnobs, plan: &mut HookPlan) {
    let mut rng = fastrand::Rng::with_seed(event_seed(knobs.seed, event.job_id, event.index));
    let (drop, duplicate) = (rng.f64() < knobs.drop, rng.f64() < knobs.duplicate);
    let max = i64::try_from(knobs.max_delay.as_millis()).unwrap_or(i64::MAX);
    let mut delay = || if max == 0 { 0 } else { rng.i64(0..=max) };
    plan.events.push(Arc::clone(&event));
    if drop {
        plan.dropped += 1;
        return;
    }
    let copies = if duplicate { 2 } else { 1 };
    plan.duplicated += u64::from(duplicate);
    for copy in 0..copies {
        let due_ms = event.at_ms.saturating_add(delay());
        let event = Arc::clone(&event);
        plan.deliveries.push(PlannedDelivery {
            event,
            due_ms,
            copy,
        });
    }
}

/// What a sender did, since it was made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookStats {
    /// Events of the watched projects (each status change once).
    pub generated: u64,
    /// Events never sent.
    pub dropped: u64,
    /// Events sent twice.
    pub duplicated: u64,
    /// Deliveries attempted: once all due ones are out, `generated - dropped + duplicated`.
    pub sent: u64,
    /// Deliveries answered, by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// Deliveries without an answer (connection refused, reset, timeout).
    pub failed: u64,
    /// Deliveries planned and not yet due.
    pub pending: u64,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub project_id: u64,
    pub job_id: u64,
    /// `build_status` sent.
    pub status: String,
    pub at_ms: Ms,
    pub due_ms: Ms,
    /// The simulator's clock when the answer came (or the attempt failed).
    pub sent_at_ms: Ms,
    pub copy: u8,
    pub idempotency_key: String,
    /// `X-Gitlab-Event-UUID`: fresh for every delivery.
    pub event_uuid: String,
    /// The answer's status; `None` when there was none.
    pub http_status: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot build the hook HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A planned delivery with the token it carries.
#[derive(Debug, Clone)]
struct Pending {
    event: Arc<JobHookEvent>,
    due_ms: Ms,
    copy: u8,
    token: String,
}

struct SenderState {
    /// The world and time of the last scan: later changes, and jobs this world did not hold,
    /// are new.
    world: Arc<World>,
    last_ms: Ms,
    pending: BTreeMap<OrderKey, Pending>,
    projects: HookProjects,
}

struct SenderInner {
    sim: Simulator,
    url: String,
    secret: String,
    knobs: HookKnobs,
    client: reqwest::Client,
    webhook_uuid: String,
    state: Mutex<SenderState>,
    stats: Mutex<HookStats>,
    log: Mutex<Vec<DeliveryRecord>>,
    deliveries: AtomicU64,
}

/// Sends a simulator's Job Hooks to one URL; clones share everything.
#[derive(Clone)]
pub struct HookSender {
    inner: Arc<SenderInner>,
}

impl std::fmt::Debug for HookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookSender")
            .field("url", &self.inner.url)
            .field("knobs", &self.inner.knobs)
            .finish_non_exhaustive()
    }
}

impl HookSender {
    /// A sender for the changes after the simulator's current time, from every project.
    pub fn new(
        sim: &Simulator,
        url: &str,
        secret: &str,
        knobs: HookKnobs,
    ) -> Result<Self, HookError> {
        // reqwest is built without a default TLS provider and refuses to build a client
        // without one; an already installed provider is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(HOOK_TIMEOUT)
            .build()?;
        let state = SenderState {
            world: sim.world(),
            last_ms: sim.now_ms(),
            pending: BTreeMap::new(),
            projects: HookProjects::All,
        };
        let webhook_uuid = uuid_like(mix(knobs.seed ^ 0x3f), mix(knobs.seed ^ 0x40));
        Ok(Self {
            inner: Arc::new(SenderInner {
                sim: sim.clone(),
                url: url.to_owned(),
                secret: secret.to_owned(),
                knobs,
                client,
                webhook_uuid,
                state: Mutex::new(state),
                stats: Mutex::default(),
                log: Mutex::default(),
                deliveries: AtomicU64::new(0),
            }),
        })
    }

    /// Starts from the changes after `ms` instead (e.g. the world's beginning).
    pub fn since(self, ms: Ms) -> Self {
        lock(&self.inner.state).last_ms = ms;
        self
    }

    /// Which projects send hooks from now on (default: all).
    pub fn set_projects(&self, projects: HookProjects) {
        lock(&self.inner.state).projects = projects;
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn stats(&self) -> HookStats {
        let mut stats = lock(&self.inner.stats).clone();
        stats.pending = lock(&self.inner.state).pending.len() as u64;
        stats
    }

    /// Every delivery attempt so far, in the order they were made.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        lock(&self.inner.log).clone()
    }

    /// Plans the changes up to `now_ms` not seen yet: counts them and queues their deliveries.
    fn collect(&self, now_ms: Ms) {
        let sim = &self.inner.sim;
        let (world, ext) = (sim.world(), sim.external_url());
        let mut state = lock(&self.inner.state);
        if now_ms <= state.last_ms && Arc::ptr_eq(&world, &state.world) {
            return;
        }
        let prev = Arc::clone(&state.world);
        let same = Arc::ptr_eq(&world, &prev);
        // Never behind the last scan: a job added meanwhile must not lose the changes between.
        let now_ms = now_ms.max(state.last_ms);
        let found = changes(&world, state.last_ms, now_ms, |id| {
            same || prev.job(id).is_some()
        });
        let mut plan = HookPlan::default();
        let mut tokens = BTreeMap::new();
        for (job, i) in found {
            let Some(token) = self.token_for(&state.projects, job.project_id, now_ms) else {
                continue;
            };
            if let Some(event) = make_event(&world, job, i, &ext, &self.inner.knobs) {
                tokens.insert((event.job_id, event.index), token);
                plan_event(Arc::new(event), &self.inner.knobs, &mut plan);
            }
        }
        for d in plan.deliveries {
            let key = order_key(&d);
            let token = tokens
                .get(&(d.event.job_id, d.event.index))
                .cloned()
                .unwrap_or_default();
            let (event, due_ms, copy) = (d.event, d.due_ms, d.copy);
            state.pending.insert(
                key,
                Pending {
                    event,
                    due_ms,
                    copy,
                    token,
                },
            );
        }
        state.world = world;
        state.last_ms = now_ms;
        drop(state);
        let mut stats = lock(&self.inner.stats);
        stats.generated += plan.events.len() as u64;
        stats.dropped += plan.dropped;
        stats.duplicated += plan.duplicated;
    }

    /// The token a project's events carry, or `None` when it sends none.
    fn token_for(&self, projects: &HookProjects, project_id: u64, now_ms: Ms) -> Option<String> {
        match projects {
            HookProjects::All => Some(self.inner.secret.clone()),
            HookProjects::Only(ids) => ids.contains(&project_id).then(|| self.inner.secret.clone()),
            HookProjects::Registered => {
                let hooks = self.inner.sim.project_hooks(project_id);
                let hook = hooks
                    .into_iter()
                    .find(|h| h.url == self.inner.url && h.job_events && h.executable_at(now_ms))?;
                Some(hook.token.unwrap_or_default())
            }
        }
    }

    fn take_due(&self, now_ms: Ms) -> Vec<Pending> {
        let mut state = lock(&self.inner.state);
        let mut due = Vec::new();
        while let Some(entry) = state.pending.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            due.push(entry.remove());
        }
        due
    }

    /// Sends, in order, every delivery due by `now_ms` (planning the changes up to then
    /// first), awaiting each answer; returns how many were sent. For a manual clock: step
    /// time, call this, and the hooks for that time have arrived.
    pub async fn deliver_until(&self, now_ms: Ms) -> usize {
        self.collect(now_ms);
        let due = self.take_due(now_ms);
        for d in &due {
            self.send(d).await;
        }
        due.len()
    }

    /// [`HookSender::deliver_until`] the simulator's current time.
    pub async fn deliver_due(&self) -> usize {
        self.deliver_until(self.inner.sim.now_ms()).await
    }

    async fn send(&self, d: &Pending) {
        let n = self.inner.deliveries.fetch_add(1, Ordering::Relaxed);
        let k = self.inner.knobs.seed ^ 0x5eed;
        let event_uuid = uuid_like(mix(k ^ mix(n)), mix(k ^ mix(!n)));
        // A `Value` always serialises.
        let body = serde_json::to_vec(&d.event.payload).unwrap_or_default();
        let resp = self
            .inner
            .client
            .post(&self.inner.url)
            .header("content-type", "application/json")
            .header("user-agent", format!("GitLab/{HOOK_GITLAB_VERSION}"))
            .header("x-gitlab-event", "Job Hook")
            .header("x-gitlab-token", &d.token)
            .header("x-gitlab-instance", self.inner.sim.external_url())
            .header("x-gitlab-webhook-uuid", &self.inner.webhook_uuid)
            .header("x-gitlab-event-uuid", &event_uuid)
            .header("idempotency-key", &d.event.idempotency_key)
            // GitLab's hook client sends no `Date`; the simulator does (its own clock, as on
            // API answers), so an exporter can tell simulated time. Whole seconds.
            .header("date", crate::render::http_date(d.due_ms))
            .body(body)
            .send()
            .await;
        // GitLab does not retry: a failure is only counted.
        let http_status = resp.ok().map(|r| r.status().as_u16());
        {
            let mut stats = lock(&self.inner.stats);
            stats.sent += 1;
            match http_status {
                Some(s) => *stats.by_status.entry(s).or_default() += 1,
                None => stats.failed += 1,
            }
        }
        let e = &d.event;
        lock(&self.inner.log).push(DeliveryRecord {
            project_id: e.project_id,
            job_id: e.job_id,
            status: e.status.clone(),
            at_ms: e.at_ms,
            due_ms: d.due_ms,
            sent_at_ms: self.inner.sim.now_ms(),
            copy: d.copy,
            idempotency_key: e.idempotency_key.clone(),
            event_uuid,
            http_status,
        });
    }

    /// Watches the simulator's clock in a background task (every 50 ms) and sends each
    /// delivery once it is due, without waiting for earlier answers (GitLab's workers run in
    /// parallel). Stops on [`HookTask::shutdown`] or when the handle is dropped.
    pub fn spawn(&self) -> HookTask {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let me = self.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut sends = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let now = me.inner.sim.now_ms();
                me.collect(now);
                for d in me.take_due(now) {
                    let me = me.clone();
                    sends.spawn(async move { me.send(&d).await });
                }
                while sends.try_join_next().is_some() {}
            }
            while sends.join_next().await.is_some() {}
        });
        HookTask {
            stop: Some(stop),
            task: Some(task),
        }
    }
}

/// The background task of [`HookSender::spawn`].
#[derive(Debug)]
pub struct HookTask {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl HookTask {
    /// Stops watching and waits for the deliveries in flight (each ends within
    /// [`HOOK_TIMEOUT`]).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for HookTask {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Whether GitLab would execute a hook in this state at `now_ms` (`WebHook#executable?`).
pub(crate) fn executable(status: HookAlertStatus, disabled_until: Option<Ms>, now_ms: Ms) -> bool {
    match status {
        HookAlertStatus::Executable => true,
        HookAlertStatus::TemporarilyDisabled => disabled_until.is_some_and(|u| u <= now_ms),
        HookAlertStatus::Disabled => false,
    }
}
