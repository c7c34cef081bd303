//! The JSON GitLab sends for jobs and projects (`Entities::Ci::Job`, `Entities::Project`).

use serde_json::{Value, json};

use super::world::{JobPlan, Ms, ProjectDef, World};

/// `2015-12-24T15:51:21.802Z`, as GitLab renders API timestamps.
pub fn iso(ms: Ms) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// `2023-01-10 13:50:02 UTC`: how Sidekiq-serialised times reach webhook payloads (whole
/// seconds).
pub fn hook_time(ms: Ms) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// `2023-01-10T13:50:02Z`: Ruby's `Time#iso8601`, whole seconds (the `*_iso` twins of hooks).
pub fn iso_seconds(ms: Ms) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
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
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub(crate) const USERS: [(&str, &str); 4] = [
    ("root", "Administrator"),
    ("alice", "Alice Example"),
    ("bob", "Bob Builder"),
    ("carol", "Carol Ops"),
];
pub(crate) const TITLES: [&str; 4] = [
    "Fix flaky spec",
    "Add caching layer",
    "Bump dependencies",
    "Update docs",
];

pub(crate) fn sha(seed: u64) -> String {
    format!(
        "{:016x}{:016x}{:08x}",
        mix(seed),
        mix(seed ^ 1),
        mix(seed ^ 2) as u32
    )
}

/// The job as `GET /projects/:id/jobs` shows it at `now`; `ext` is the external URL.
pub fn job_json(world: &World, job: &JobPlan, path: &str, now: Ms, ext: &str) -> Value {
    let status = job.status_at(now).unwrap_or("created");
    let pipeline = job.pipeline_id;
    let first = world.pipeline_jobs(pipeline).next();
    let pipeline_created = first.map_or(job.created_at_ms, |j| j.created_at_ms);
    let sha = sha(pipeline);
    let user = mix(pipeline ^ 0x55) as usize % USERS.len();
    let (username, user_name) = USERS[user];
    let commit_at = iso(pipeline_created - 5 * 60_000).replace('Z', "+00:00");
    let title = TITLES[mix(pipeline) as usize % TITLES.len()];
    let runner = job.runner_at(now).map(|r| {
        json!({
            "id": r.id, "description": r.description, "ip_address": null, "active": true,
            "paused": false, "is_shared": r.is_shared, "runner_type": r.runner_type,
            "name": "gitlab-runner", "online": true, "status": "online",
        })
    });
    // An erased log (`Simulator::erase_log`) shows, as GitLab's erase does, right away.
    let erased = (world.logs().overrides.get(&job.id)).is_some_and(|o| o.erased);
    let erased_at = erased.then(|| iso(job.updated_at(now)));
    let mut v = json!({
        "id": job.id, "status": status, "stage": job.stage, "name": job.name, "ref": job.ref_,
        "tag": job.tag, "coverage": null, "allow_failure": job.allow_failure, "archived": false,
        "source": job.source, "created_at": iso(job.created_at_ms),
        "started_at": job.started_at(now).map(iso), "finished_at": job.finished_at(now).map(iso),
        "erased_at": erased_at, "duration": secs(job.duration_ms(now)),
        "queued_duration": secs(job.queued_duration_ms(now)),
        "artifacts": [], "artifacts_expire_at": null, "tag_list": job.tag_list,
        "pipeline": {
            "id": pipeline, "iid": job.pipeline_iid, "project_id": job.project_id, "sha": sha,
            "ref": job.ref_, "status": world.pipeline_status(pipeline, now), "source": job.source,
            "created_at": iso(pipeline_created),
            "updated_at": iso(world.pipeline_updated_at(pipeline, now)),
            "web_url": format!("{ext}/{path}/-/pipelines/{pipeline}"),
        },
        "runner": runner, "runner_manager": null,
        "user": {
            "id": user + 1, "username": username, "name": user_name, "state": "active",
            "locked": false, "public_email": null, "bot": false,
            "avatar_url": format!("https://www.gravatar.com/avatar/{}?s=80&d=identicon", &sha[..32]),
            "web_url": format!("{ext}/{username}"), "created_at": "2019-03-14T09:26:53.311Z",
        },
        "commit": {
            "id": sha, "short_id": &sha[..8], "created_at": commit_at, "title": title,
            "message": format!("{title}\n"), "author_name": user_name,
            "author_email": format!("{username}@example.com"), "authored_date": commit_at,
            "committer_name": user_name, "committer_email": format!("{username}@example.com"),
            "committed_date": commit_at, "web_url": format!("{ext}/{path}/-/commit/{sha}"),
        },
        "web_url": format!("{ext}/{path}/-/jobs/{}", job.id),
        "project": {"ci_job_token_scope_enabled": false},
    });
    if status == "failed" {
        // The key exists only for failed jobs.
        let reason = job.failure_reason.as_deref().unwrap_or("unknown_failure");
        v["failure_reason"] = json!(reason);
    }
    v
}

/// When the project was created: a fixed, made-up time per id.
pub(super) fn project_created_ms(p: &ProjectDef) -> Ms {
    1_577_836_800_000 + (p.id as Ms % 1000) * 86_400_000
}

/// `last_activity_at`: the latest change of its visible jobs, else its creation.
pub(super) fn last_activity_ms(world: &World, p: &ProjectDef, now: Ms) -> Ms {
    world
        .project_jobs(p.id)
        .rev()
        .find(|j| j.visible_at(now))
        .map_or(project_created_ms(p), |j| j.updated_at(now))
}

/// `Entities::NamespaceBasic` of the project's group.
fn namespace_json(world: &World, p: &ProjectDef, ext: &str) -> Value {
    let full_path = p.namespace();
    let group = world.find_group(full_path);
    let path = group.map_or(full_path, |g| g.path());
    json!({
        "id": group.map(|g| g.id),
        "name": path,
        "path": path,
        "kind": "group",
        "full_path": full_path,
        "parent_id": group.and_then(|g| g.parent_id),
        "avatar_url": null,
        "web_url": format!("{ext}/groups/{full_path}"),
    })
}

/// `Entities::BasicProjectDetails`: what lists answer with `simple=true` (no `archived`, no
/// `visibility`).
pub fn basic_project_json(world: &World, p: &ProjectDef, now: Ms, ext: &str) -> Value {
    let path = &p.path_with_namespace;
    let name = path.rsplit_once('/').map_or(path.as_str(), |(_, n)| n);
    let title = path.split('/').collect::<Vec<_>>().join(" / ");
    let host = ext.split("://").nth(1).unwrap_or(ext);
    json!({
        "id": p.id,
        "description": null,
        "name": name,
        "name_with_namespace": title,
        "path": name,
        "path_with_namespace": path,
        "created_at": iso(project_created_ms(p)),
        "default_branch": p.default_branch,
        "tag_list": [],
        "topics": [],
        "ssh_url_to_repo": format!("git@{host}:{path}.git"),
        "http_url_to_repo": format!("{ext}/{path}.git"),
        "web_url": format!("{ext}/{path}"),
        "readme_url": null,
        "forks_count": 0,
        "avatar_url": null,
        "star_count": 0,
        "last_activity_at": iso(last_activity_ms(world, p, now)),
        "namespace": namespace_json(world, p, ext),
    })
}

/// `GET /projects/:id` and list entries (`Entities::Project`), the fields a reporter-level token
/// sees, abridged.
pub fn project_json(world: &World, p: &ProjectDef, now: Ms, ext: &str) -> Value {
    let mut v = basic_project_json(world, p, now, ext);
    let more = json!({
        "archived": p.archived,
        "visibility": "private",
        "empty_repo": false,
        "jobs_enabled": true,
        "builds_access_level": "enabled",
        "ci_config_path": null,
    });
    if let (Value::Object(v), Value::Object(more)) = (&mut v, more) {
        v.extend(more);
    }
    v
}

/// `Entities::ProjectWithAccess` (`GET /projects`): the project plus the user's access, Reporter
/// on member projects.
pub fn project_with_access_json(world: &World, p: &ProjectDef, now: Ms, ext: &str) -> Value {
    let mut v = project_json(world, p, now, ext);
    let access = p
        .member
        .then(|| json!({"access_level": 20, "notification_level": 3}));
    v["permissions"] = json!({"project_access": access, "group_access": null});
    v
}
