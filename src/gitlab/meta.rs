//! What `--check-gitlab` asks GitLab besides the exporter's own requests: `GET /version`
//! (`lib/api/metadata.rb`), `GET /personal_access_tokens/self`
//! (`lib/api/personal_access_tokens/self_information.rb`, GitLab 15.5+, personal, project and
//! group access tokens only) and one job of a project (`GET /projects/:id/jobs?per_page=1`).
//! Each answer comes with the `RateLimit-*` headers it carried.
//!
//! Every string here is GitLab's: shown only through [`crate::model::text`].

use reqwest::header::HeaderMap;
use serde::Deserialize;

use super::headers::{header_f64, raw_header, reset_in};
use super::{ApiError, GitlabClient, Response, decode_error};

/// `GET /version`'s answer (`version` and `revision`; the rest is not read).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Version {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub revision: Option<String>,
}

/// `Entities::PersonalAccessToken`: what GitLab says about the token asking. Lenient: every
/// field may be missing or null.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenInfo {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// `YYYY-MM-DD` (GitLab's `strftime("%Y-%m-%d")`); `None`: it never expires.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default)]
    pub revoked: Option<bool>,
}

/// The `RateLimit-*` headers of one answer (GitLab sends them on some answers only).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimitSeen {
    pub limit: Option<f64>,
    pub remaining: Option<f64>,
    /// Until `RateLimit-Reset`, from GitLab's clock.
    pub reset_in: Option<std::time::Duration>,
    /// `RateLimit-Name`, bounded and escaped.
    pub name: Option<String>,
}

impl RateLimitSeen {
    fn of(headers: &HeaderMap) -> Self {
        let name = raw_header(headers, "ratelimit-name");
        Self {
            limit: header_f64(headers, "ratelimit-limit"),
            remaining: header_f64(headers, "ratelimit-remaining"),
            reset_in: reset_in(headers),
            name: (!name.is_empty()).then_some(name),
        }
    }

    /// Whether the answer carried any.
    pub fn any(&self) -> bool {
        self.limit.is_some() || self.remaining.is_some()
    }
}

/// One job page's answer, as far as the doctor cares.
#[derive(Debug, Clone, Default)]
pub struct JobsProbe {
    /// The newest job's id, when the project has one.
    pub latest: Option<u64>,
}

#[derive(Deserialize)]
struct JobId {
    id: u64,
}

impl GitlabClient {
    /// `GET /version`.
    pub async fn version(&self) -> Result<(Version, RateLimitSeen), ApiError> {
        self.get("version", "version", |resp| {
            decode::<Version>("version", &resp).map(|v| (v, RateLimitSeen::of(&resp.headers)))
        })
        .await
    }

    /// `GET /personal_access_tokens/self`.
    pub async fn token_self(&self) -> Result<(TokenInfo, RateLimitSeen), ApiError> {
        self.get("token_self", "personal_access_tokens/self", |resp| {
            decode::<TokenInfo>("token_self", &resp).map(|t| (t, RateLimitSeen::of(&resp.headers)))
        })
        .await
    }

    /// `GET /projects/:id/jobs?per_page=1`: whether the jobs endpoint answers this token.
    pub async fn jobs_probe(&self, project: &str) -> Result<(JobsProbe, RateLimitSeen), ApiError> {
        let rel = format!("projects/{project}/jobs?per_page=1");
        self.get("jobs", &rel, |resp| {
            // Only the first item's id is read; a page of anything else is no jobs list.
            let items = decode::<Vec<serde_json::Value>>("jobs", &resp)?;
            let latest = items
                .first()
                .and_then(|v| serde_json::from_value::<JobId>(v.clone()).ok())
                .map(|j| j.id);
            Ok((JobsProbe { latest }, RateLimitSeen::of(&resp.headers)))
        })
        .await
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    endpoint: &'static str,
    resp: &Response,
) -> Result<T, ApiError> {
    serde_json::from_slice(&resp.body).map_err(|e| decode_error(endpoint, &e, &resp.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_info_decodes_leniently() {
        let t: TokenInfo = serde_json::from_str(
            r#"{"id":4,"name":"x","revoked":false,"created_at":"2026-01-01T00:00:00.000Z",
               "scopes":["read_api","read_user"],"user_id":2,"active":true,
               "expires_at":"2027-01-31","last_used_ips":[]}"#,
        )
        .unwrap();
        assert_eq!(t.scopes.as_deref().unwrap(), ["read_api", "read_user"]);
        assert_eq!(t.expires_at.as_deref(), Some("2027-01-31"));
        let t: TokenInfo = serde_json::from_str(r#"{"expires_at":null}"#).unwrap();
        assert!(t.expires_at.is_none() && t.scopes.is_none());
    }
}
