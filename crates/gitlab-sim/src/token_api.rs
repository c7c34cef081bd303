//! What `--check-gitlab` asks before anything else: `GET /version` (`lib/api/metadata.rb`:
//! authenticated, `read_user` enough for a GET) and `GET /personal_access_tokens/self`
//! (`lib/api/personal_access_tokens/self_information.rb`: any scope, personal, project and
//! group access tokens only; `Entities::PersonalAccessTokenWithLastUsedIps`), with knobs for
//! the token (scopes, expiry, rejected), per-project access, and `RateLimit-*` headers.
//!
//! Scopes are enforced as GitLab's `APIGuard` does: a token without `api` or `read_api` gets
//! 403 `insufficient_scope` on every other endpoint.

use std::collections::BTreeMap;

use axum::response::Response;
use serde_json::json;

use super::http::{json_response, set};
use super::render::{http_date, iso};
use super::world::Ms;

/// The GitLab version `GET /version` reports.
pub const SIM_GITLAB_VERSION: &str = "17.5.2";
/// Its revision.
pub const SIM_GITLAB_REVISION: &str = "5fb5e2e9a4c";

/// What kind of token the configured one is, as `/personal_access_tokens/self` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenKind {
    /// A personal, project or group access token: the endpoint describes it.
    #[default]
    AccessToken,
    /// Another kind (a CI job token, OAuth): 400 "requires token type to be a personal access
    /// token".
    Other,
    /// A GitLab without the endpoint (before 15.5): Grape's 404.
    NoEndpoint,
}

/// The configured token as GitLab stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    pub name: String,
    pub scopes: Vec<String>,
    /// `YYYY-MM-DD`, as the API renders it; `None`: never expires.
    pub expires_at: Option<String>,
    pub kind: TokenKind,
}

impl Default for TokenSpec {
    fn default() -> Self {
        Self {
            name: "gitlab-jobs-exporter".into(),
            scopes: vec!["read_api".into()],
            expires_at: None,
            kind: TokenKind::AccessToken,
        }
    }
}

/// Why every request with the token answers 401 (`APIGuard`'s messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// `{"message":"401 Unauthorized"}`: unknown token.
    Unknown,
    Expired,
    Revoked,
}

/// What the token may do with one project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectAccess {
    /// 404 on every `/projects/:id…` endpoint (GitLab hides what the user cannot see).
    NotFound,
    /// The project is visible, its jobs are not: 403 on `/projects/:id/jobs…` (a Guest).
    NoJobs,
}

#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    pub spec: TokenSpec,
    pub rejected: Option<TokenRejection>,
    pub projects: BTreeMap<u64, ProjectAccess>,
    /// `RateLimit-Limit` to send on every answer, with the requests counted against it.
    pub rate_limit: Option<(u32, u32)>,
}

/// Which route a request took, as far as these knobs care.
pub(crate) struct Request<'a> {
    pub path: &'a str,
    pub token_ok: bool,
    /// The project it addresses (looked up), and whether it is a jobs endpoint.
    pub project: Option<u64>,
    pub jobs: bool,
    pub now: Ms,
}

fn error(status: u16, key: &str, message: &str) -> Response {
    json_response(status, &json!({ key: message }))
}

fn insufficient_scope() -> Response {
    json_response(
        403,
        &json!({
            "error": "insufficient_scope",
            "error_description": "The request requires higher privileges than provided by the access token.",
            "scope": "api read_api",
        }),
    )
}

impl TokenStore {
    fn has(&self, scope: &str) -> bool {
        self.spec.scopes.iter().any(|s| s == scope)
    }

    fn reads_api(&self) -> bool {
        self.has("api") || self.has("read_api")
    }

    /// The answer these knobs give instead of the normal one, if any.
    pub(crate) fn answer(&self, req: &Request<'_>) -> Option<Response> {
        let own = matches!(
            req.path,
            "/api/v4/version" | "/api/v4/personal_access_tokens/self"
        );
        if !req.token_ok {
            return own.then(|| error(401, "message", "401 Unauthorized"));
        }
        if let Some(why) = self.rejected {
            return Some(match why {
                TokenRejection::Unknown => error(401, "message", "401 Unauthorized"),
                TokenRejection::Expired => invalid_token(
                    "Token is expired. You can either do re-authorization or token refresh.",
                ),
                TokenRejection::Revoked => {
                    invalid_token("Token was revoked. You have to re-authorize from the user.")
                }
            });
        }
        match req.path {
            "/api/v4/version" if self.reads_api() || self.has("read_user") => Some(json_response(
                200,
                &json!({"version": SIM_GITLAB_VERSION, "revision": SIM_GITLAB_REVISION,
                        "kas": {"enabled": false, "externalUrl": null, "version": null},
                        "enterprise": false}),
            )),
            "/api/v4/personal_access_tokens/self" => Some(self.token_self(req.now)),
            _ if !self.reads_api() => Some(insufficient_scope()),
            _ => match req.project.and_then(|p| self.projects.get(&p)) {
                Some(ProjectAccess::NotFound) => {
                    Some(error(404, "message", "404 Project Not Found"))
                }
                Some(ProjectAccess::NoJobs) if req.jobs => {
                    Some(error(403, "message", "403 Forbidden"))
                }
                _ => None,
            },
        }
    }

    fn token_self(&self, now: Ms) -> Response {
        match self.spec.kind {
            TokenKind::Other => error(
                400,
                "message",
                "400 Bad request - This endpoint requires token type to be a personal access token",
            ),
            TokenKind::NoEndpoint => error(404, "error", "404 Not Found"),
            TokenKind::AccessToken => json_response(
                200,
                &json!({
                    "id": 7, "name": self.spec.name, "revoked": false,
                    "created_at": iso(now - 30 * 86_400_000), "description": null,
                    "scopes": self.spec.scopes, "user_id": 2, "last_used_at": iso(now),
                    "active": true, "expires_at": self.spec.expires_at,
                    "last_used_ips": ["127.0.0.1"],
                }),
            ),
        }
    }

    /// Adds `RateLimit-*` headers (GitLab.com sends them on every API answer) when enabled.
    pub(crate) fn decorate(&mut self, resp: &mut Response, now: Ms) {
        let Some((limit, used)) = self.rate_limit.as_mut() else {
            return;
        };
        *used = used.saturating_add(1);
        let (limit, used) = (*limit, *used);
        let reset_ms = (now / 60_000 + 1) * 60_000;
        let h = resp.headers_mut();
        set(h, "ratelimit-name", "throttle_authenticated_api");
        set(h, "ratelimit-limit", &limit.to_string());
        set(h, "ratelimit-observed", &used.to_string());
        set(
            h,
            "ratelimit-remaining",
            &limit.saturating_sub(used).to_string(),
        );
        set(h, "ratelimit-reset", &(reset_ms / 1000).to_string());
        set(h, "ratelimit-resettime", &http_date(reset_ms));
    }
}

fn invalid_token(description: &str) -> Response {
    json_response(
        401,
        &json!({"error": "invalid_token", "error_description": description}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, project: Option<u64>, jobs: bool) -> Request<'_> {
        Request {
            path,
            token_ok: true,
            project,
            jobs,
            now: 1_764_000_000_000,
        }
    }

    fn status(r: Option<Response>) -> Option<u16> {
        r.map(|r| r.status().as_u16())
    }

    #[test]
    fn scopes_are_enforced_as_gitlabs_api_guard_does() {
        let mut store = TokenStore::default();
        assert_eq!(
            status(store.answer(&req("/api/v4/version", None, false))),
            Some(200)
        );
        assert_eq!(
            status(store.answer(&req("/api/v4/projects/1", Some(1), false))),
            None
        );
        store.spec.scopes = vec!["read_user".into()];
        assert_eq!(
            status(store.answer(&req("/api/v4/version", None, false))),
            Some(200)
        );
        assert_eq!(
            status(store.answer(&req("/api/v4/personal_access_tokens/self", None, false))),
            Some(200)
        );
        assert_eq!(
            status(store.answer(&req("/api/v4/projects/1", Some(1), false))),
            Some(403)
        );
        store.spec.scopes = vec!["read_repository".into()];
        assert_eq!(
            status(store.answer(&req("/api/v4/version", None, false))),
            Some(403)
        );
    }

    #[test]
    fn rejection_kinds_and_project_access() {
        let mut store = TokenStore::default();
        let mut unauth = req("/api/v4/version", None, false);
        unauth.token_ok = false;
        assert_eq!(status(store.answer(&unauth)), Some(401));
        store.rejected = Some(TokenRejection::Revoked);
        assert_eq!(
            status(store.answer(&req("/api/v4/projects/1", Some(1), false))),
            Some(401)
        );
        store.rejected = None;
        store.projects.insert(1, ProjectAccess::NoJobs);
        assert_eq!(
            status(store.answer(&req("/api/v4/projects/1", Some(1), false))),
            None
        );
        assert_eq!(
            status(store.answer(&req("/api/v4/projects/1/jobs", Some(1), true))),
            Some(403)
        );
        store.projects.insert(1, ProjectAccess::NotFound);
        assert_eq!(
            status(store.answer(&req("/api/v4/projects/1", Some(1), false))),
            Some(404)
        );
        store.spec.kind = TokenKind::Other;
        let self_ = "/api/v4/personal_access_tokens/self";
        assert_eq!(status(store.answer(&req(self_, None, false))), Some(400));
        store.spec.kind = TokenKind::NoEndpoint;
        assert_eq!(status(store.answer(&req(self_, None, false))), Some(404));
    }
}
