//! The JSON GitLab sends for jobs and projects (`Entities::Ci::Job`, `Entities::Project`).

use serde::Serialize;
use serde_json::{Value, json};

use super::world::{JobPlan, Ms, ProjectDef, RunnerDef, World};

/// `2015-12-24T15:51:21.802Z`, as GitLab renders API timestamps.
pub fn iso(ms: Ms) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// `Wed, 25 Nov 2026 08:50:24 GMT` (RFC 7231 IMF-fixdate).
pub fn http_date(ms: Ms) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default()
}

fn secs(ms: Option<Ms>) -> Option<f64> {
    ms.map(|m| m as f64 / 1000.0)
}

/// A stable pseudo-random value, so commit shas and users need no storage.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[derive(Serialize)]
pub struct JobJson<'a> {
    id: u64,
    status: &'a str,
    stage: &'a str,
    name: &'a str,
    #[serde(rename = "ref")]
    ref_: &'a str,
    tag: bool,
    coverage: Option<f64>,
    allow_failure: bool,
    archived: bool,
    source: &'a str,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    erased_at: Option<String>,
    duration: Option<f64>,
    queued_duration: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<&'a str>,
    artifacts: [(); 0],
    artifacts_expire_at: Option<String>,
    tag_list: &'a [String],
    pipeline: PipelineJson<'a>,
    runner: Option<RunnerJson<'a>>,
    runner_manager: Option<()>,
    user: UserJson,
    commit: CommitJson,
    web_url: String,
    project: ProjectFlags,
}

#[derive(Serialize)]
struct PipelineJson<'a> {
    id: u64,
    iid: u64,
    project_id: u64,
    sha: String,
    #[serde(rename = "ref")]
    ref_: &'a str,
    status: &'static str,
    source: &'a str,
    created_at: String,
    updated_at: String,
    web_url: String,
}

#[derive(Serialize)]
struct RunnerJson<'a> {
    id: u64,
    description: &'a str,
    ip_address: Option<&'a str>,
    active: bool,
    paused: bool,
    is_shared: bool,
    runner_type: &'a str,
    name: Option<&'a str>,
    online: bool,
    status: &'static str,
}

#[derive(Serialize)]
struct UserJson {
    id: u64,
    username: &'static str,
    public_email: Option<&'static str>,
    name: &'static str,
    state: &'static str,
    locked: bool,
    avatar_url: String,
    web_url: String,
    created_at: &'static str,
    bio: &'static str,
    location: &'static str,
    linkedin: &'static str,
    twitter: &'static str,
    website_url: &'static str,
    organization: &'static str,
    job_title: &'static str,
    pronouns: Option<&'static str>,
    bot: bool,
    work_information: Option<&'static str>,
}

#[derive(Serialize)]
struct CommitJson {
    id: String,
    short_id: String,
    created_at: String,
    parent_ids: Vec<String>,
    title: &'static str,
    message: String,
    author_name: &'static str,
    author_email: String,
    authored_date: String,
    committer_name: &'static str,
    committer_email: String,
    committed_date: String,
    web_url: String,
}

#[derive(Serialize)]
struct ProjectFlags {
    ci_job_token_scope_enabled: bool,
}

const USERS: [(&str, &str); 4] = [
    ("root", "Administrator"),
    ("alice", "Alice Example"),
    ("bob", "Bob Builder"),
    ("carol", "Carol Ops"),
];
const TITLES: [&str; 5] = [
    "Fix flaky spec",
    "Add caching layer",
    "Bump dependencies",
    "Refactor job runner",
    "Update docs",
];

fn sha(seed: u64) -> String {
    format!(
        "{:016x}{:016x}{:08x}",
        mix(seed),
        mix(seed ^ 1),
        mix(seed ^ 2) as u32
    )
}

/// The job as `GET /projects/:id/jobs` shows it at `now`; `ext` is the external URL.
pub fn job_json<'a>(
    world: &'a World,
    job: &'a JobPlan,
    path: &str,
    now: Ms,
    ext: &str,
) -> JobJson<'a> {
    let status = job.status_at(now).unwrap_or("created");
    let pipeline_created = world
        .pipeline_jobs(job.pipeline_id)
        .next()
        .map_or(job.created_at_ms, |j| j.created_at_ms);
    let sha = sha(job.pipeline_id);
    let user = mix(job.pipeline_id ^ 0x55) as usize % USERS.len();
    let (username, user_name) = USERS[user];
    let commit_at = iso(pipeline_created - 5 * 60_000).replace('Z', "+00:00");
    let title = TITLES[mix(job.pipeline_id) as usize % TITLES.len()];
    JobJson {
        id: job.id,
        status,
        stage: &job.stage,
        name: &job.name,
        ref_: &job.ref_,
        tag: job.tag,
        coverage: None,
        allow_failure: job.allow_failure,
        archived: false,
        source: &job.source,
        created_at: iso(job.created_at_ms),
        started_at: job.started_at(now).map(iso),
        finished_at: job.finished_at(now).map(iso),
        erased_at: None,
        duration: secs(job.duration_ms(now)),
        queued_duration: secs(job.queued_duration_ms(now)),
        failure_reason: (status == "failed")
            .then(|| job.failure_reason.as_deref().unwrap_or("unknown_failure")),
        artifacts: [],
        artifacts_expire_at: None,
        tag_list: &job.tag_list,
        pipeline: PipelineJson {
            id: job.pipeline_id,
            iid: job.pipeline_iid,
            project_id: job.project_id,
            sha: sha.clone(),
            ref_: &job.ref_,
            status: world.pipeline_status(job.pipeline_id, now),
            source: &job.source,
            created_at: iso(pipeline_created),
            updated_at: iso(world.pipeline_updated_at(job.pipeline_id, now)),
            web_url: format!("{ext}/{path}/-/pipelines/{}", job.pipeline_id),
        },
        runner: job.runner_at(now).map(runner_json),
        runner_manager: None,
        user: UserJson {
            id: user as u64 + 1,
            username,
            public_email: None,
            name: user_name,
            state: "active",
            locked: false,
            avatar_url: format!(
                "https://www.gravatar.com/avatar/{}?s=80&d=identicon",
                &sha[..32]
            ),
            web_url: format!("{ext}/{username}"),
            created_at: "2019-03-14T09:26:53.311Z",
            bio: "",
            location: "",
            linkedin: "",
            twitter: "",
            website_url: "",
            organization: "",
            job_title: "",
            pronouns: None,
            bot: false,
            work_information: None,
        },
        commit: CommitJson {
            short_id: sha[..8].to_owned(),
            created_at: commit_at.clone(),
            parent_ids: vec![self::sha(job.pipeline_id ^ 0xFFFF)],
            title,
            message: format!("{title}\n"),
            author_name: user_name,
            author_email: format!("{username}@example.com"),
            authored_date: commit_at.clone(),
            committer_name: user_name,
            committer_email: format!("{username}@example.com"),
            committed_date: commit_at,
            web_url: format!("{ext}/{path}/-/commit/{sha}"),
            id: sha,
        },
        web_url: format!("{ext}/{path}/-/jobs/{}", job.id),
        project: ProjectFlags {
            ci_job_token_scope_enabled: false,
        },
    }
}

fn runner_json(r: &RunnerDef) -> RunnerJson<'_> {
    RunnerJson {
        id: r.id,
        description: &r.description,
        ip_address: None,
        active: true,
        paused: false,
        is_shared: r.is_shared,
        runner_type: &r.runner_type,
        name: Some("gitlab-runner"),
        online: true,
        status: "online",
    }
}

/// `GET /projects/:id` (the fields a reporter-level token sees, abridged).
pub fn project_json(world: &World, p: &ProjectDef, now: Ms, ext: &str) -> Value {
    let path = &p.path_with_namespace;
    let (namespace, name) = path.rsplit_once('/').unwrap_or(("", path));
    let title = |s: &str| s.split('/').collect::<Vec<_>>().join(" / ");
    let created = 1_577_836_800_000 + (p.id as Ms % 1000) * 86_400_000;
    let last_activity = world
        .project_jobs(p.id)
        .rev()
        .find(|j| j.visible_at(now))
        .map_or(created, |j| j.updated_at(now));
    json!({
        "id": p.id,
        "description": null,
        "name": name,
        "name_with_namespace": title(path),
        "path": name,
        "path_with_namespace": path,
        "created_at": iso(created),
        "default_branch": p.default_branch,
        "tag_list": [],
        "topics": [],
        "ssh_url_to_repo": format!("git@{}:{path}.git", ext.split("://").nth(1).unwrap_or(ext)),
        "http_url_to_repo": format!("{ext}/{path}.git"),
        "web_url": format!("{ext}/{path}"),
        "readme_url": null,
        "avatar_url": null,
        "forks_count": 0,
        "star_count": 0,
        "last_activity_at": iso(last_activity),
        "namespace": {
            "id": mix(namespace.len() as u64) % 1000 + 1,
            "name": namespace.rsplit('/').next().unwrap_or(namespace),
            "path": namespace.rsplit('/').next().unwrap_or(namespace),
            "kind": "group",
            "full_path": namespace,
            "avatar_url": null,
            "web_url": format!("{ext}/groups/{namespace}"),
        },
        "archived": p.archived,
        "visibility": "private",
        "empty_repo": false,
        "jobs_enabled": true,
        "builds_access_level": "enabled",
        "ci_config_path": null,
    })
}
