//! Project discovery: `GET /groups/:id/projects` and `GET /projects`, with GitLab's parameter
//! checks, filters, orderings and both pagination styles (`lib/api/groups.rb`,
//! `lib/api/projects.rb`, `lib/gitlab/pagination/offset_pagination.rb`,
//! `lib/gitlab/pagination/keyset/pager.rb`).

use std::cmp::Ordering;

use axum::response::Response;
use serde_json::Value;

use super::http::{Param, Params, Reject, int_param, json_response, page_link, set};
use super::render::{basic_project_json, last_activity_ms, project_json, project_with_access_json};
use super::world::{Ms, ProjectDef, World};

const NO_KEYSET: &str = "Keyset pagination is not yet available for this type of request";
/// `offset_pagination_limit` of the default plan: deeper offsets on `/projects` answer 405.
const OFFSET_LIMIT: i64 = 50_000;
const ORDER_BY: [&str; 8] = [
    "id",
    "name",
    "path",
    "created_at",
    "updated_at",
    "last_activity_at",
    "similarity",
    "star_count",
];

/// Which list a request asked for.
pub(super) enum Listing {
    /// `GET /groups/:id/projects`, `:id` percent-decoded.
    Group(String),
    /// `GET /projects`
    All,
}

fn one<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    match params.get(name) {
        Some(Param::One(v)) => Some(v.as_str()),
        _ => None,
    }
}

/// Grape's `Boolean` coercion of an optional param: `Ok(None)` when absent; the coerced value is
/// written back, as Grape does, so links carry `true`/`false`.
pub(super) fn bool_param(params: &mut Params, name: &str) -> Result<Option<bool>, Reject> {
    let value = match params.get(name) {
        None => return Ok(None),
        Some(Param::One(v)) => match v.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" | "y" | "on" => Some(true),
            "false" | "f" | "0" | "no" | "n" | "off" => Some(false),
            _ => None,
        },
        Some(Param::Many(_)) => None,
    };
    let value = value.ok_or_else(|| Reject(400, "error", format!("{name} is invalid")))?;
    params.insert(name.to_owned(), Param::One(value.to_string()));
    Ok(Some(value))
}

/// A `values:`-restricted string param with a default, written back like Grape does.
fn choice_param(
    params: &mut Params,
    name: &str,
    allowed: &[&str],
    default: &str,
) -> Result<String, Reject> {
    let value = match params.get(name) {
        None => default.to_owned(),
        Some(Param::One(v)) if allowed.contains(&v.as_str()) => v.clone(),
        Some(_) => {
            let message = format!("{name} does not have a valid value");
            return Err(Reject(400, "error", message));
        }
    };
    params.insert(name.to_owned(), Param::One(value.clone()));
    Ok(value)
}

fn set_default(params: &mut Params, name: &str, value: &str) {
    params
        .entry(name.to_owned())
        .or_insert_with(|| Param::One(value.to_owned()));
}

/// The ordering GitLab applies: `order_by` then `id` in the same direction as the tie breaker
/// (`order_options_with_tie_breaker` in `lib/api/helpers.rb`, which also turns `created_at`
/// into `id`).
fn compare(
    world: &World,
    order_by: &str,
    now: Ms,
) -> impl Fn(&&ProjectDef, &&ProjectDef) -> Ordering {
    let name = |p: &ProjectDef| {
        let path = &p.path_with_namespace;
        path.rsplit_once('/')
            .map_or(path.clone(), |(_, n)| n.to_owned())
    };
    let key = move |a: &ProjectDef, b: &ProjectDef| match order_by {
        // Names are paths here; `similarity` without `search` sorts by name.
        "name" | "path" | "similarity" => name(a).cmp(&name(b)),
        "updated_at" | "last_activity_at" => {
            last_activity_ms(world, a, now).cmp(&last_activity_ms(world, b, now))
        }
        // `id`, `created_at` (sorted by id), `star_count` (always 0 here).
        _ => Ordering::Equal,
    };
    move |a, b| key(a, b).then(a.id.cmp(&b.id))
}

pub(super) fn list_projects(
    world: &World,
    path: &str,
    listing: Listing,
    mut params: Params,
    now: Ms,
    ext: &str,
) -> Result<Response, Reject> {
    // Grape checks and coerces every declared param before the endpoint runs, and fills in
    // defaults; links repeat the result.
    let archived = bool_param(&mut params, "archived")?;
    let simple = bool_param(&mut params, "simple")?.unwrap_or(false);
    set_default(&mut params, "simple", "false");
    let order_by = choice_param(&mut params, "order_by", &ORDER_BY, "created_at")?;
    let sort = choice_param(&mut params, "sort", &["asc", "desc"], "desc")?;
    let page = int_param(&params, "page", 1)?;
    let raw_per_page = int_param(&params, "per_page", 20)?;
    params.insert("page".into(), Param::One(page.to_string()));
    params.insert("per_page".into(), Param::One(raw_per_page.to_string()));
    let defaults = ["owned", "starred", "with_issues_enabled"];
    for name in defaults.into_iter().chain(["with_merge_requests_enabled"]) {
        bool_param(&mut params, name)?;
        set_default(&mut params, name, "false");
    }
    let (mut membership, mut id_after, mut id_before) = (false, None, None);
    let group = match &listing {
        Listing::Group(id) => {
            let with_shared = bool_param(&mut params, "with_shared")?;
            let subgroups = bool_param(&mut params, "include_subgroups")?.unwrap_or(false);
            bool_param(&mut params, "include_ancestor_groups")?;
            set_default(
                &mut params,
                "with_shared",
                &with_shared.unwrap_or(true).to_string(),
            );
            set_default(&mut params, "include_subgroups", "false");
            set_default(&mut params, "include_ancestor_groups", "false");
            params.insert("id".into(), Param::One(id.clone()));
            let Some(group) = world.find_group(id) else {
                return Err(Reject(404, "message", "404 Group Not Found".into()));
            };
            Some((group.full_path.to_lowercase(), subgroups))
        }
        Listing::All => {
            membership = bool_param(&mut params, "membership")?.unwrap_or(false);
            for name in ["membership", "imported", "statistics"] {
                bool_param(&mut params, name)?;
                set_default(&mut params, name, "false");
            }
            let cursor = |params: &Params, name| match params.get(name) {
                None => Ok(None),
                Some(_) => int_param(params, name, 0).map(Some),
            };
            id_after = cursor(&params, "id_after")?;
            id_before = cursor(&params, "id_before")?;
            None
        }
    };
    let keyset = matches!(listing, Listing::All) && one(&params, "pagination") == Some("keyset");
    if keyset && order_by != "id" {
        // `Gitlab::Pagination::Keyset.available?`: only `order_by=id` alone (the default
        // `created_at` gets an `id` tie breaker, which makes two columns).
        return Err(Reject(405, "error", NO_KEYSET.into()));
    }
    if matches!(listing, Listing::All)
        && !keyset
        && page.saturating_mul(raw_per_page) > OFFSET_LIMIT
    {
        let message = format!(
            "Offset pagination has a maximum allowed offset of {OFFSET_LIMIT} for requests that \
             return objects of type Project. Remaining records can be retrieved using keyset \
             pagination."
        );
        return Err(Reject(405, "error", message));
    }

    let in_group = |p: &ProjectDef| match &group {
        None => true,
        Some((full_path, subgroups)) => {
            let ns = p.namespace().to_lowercase();
            ns == *full_path
                || (*subgroups
                    && ns
                        .strip_prefix(full_path.as_str())
                        .is_some_and(|rest| rest.starts_with('/')))
        }
    };
    let mut found: Vec<&ProjectDef> = world
        .projects()
        .iter()
        .filter(|p| in_group(p))
        .filter(|p| archived.is_none_or(|a| p.archived == a))
        .filter(|p| !membership || p.member)
        .filter(|p| id_after.is_none_or(|a| p.id as i64 > a))
        .filter(|p| id_before.is_none_or(|b| (p.id as i64) < b))
        .collect();
    let cmp = compare(world, &order_by, now);
    found.sort_by(|a, b| if sort == "asc" { cmp(a, b) } else { cmp(b, a) });

    let render = |p: &&ProjectDef| match listing {
        _ if simple => basic_project_json(world, p, now, ext),
        Listing::Group(_) => project_json(world, p, now, ext),
        Listing::All => project_with_access_json(world, p, now, ext),
    };
    if keyset {
        // `Keyset::Page#per_page`: 20 when not positive, at most 100.
        let per_page = if raw_per_page <= 0 {
            20
        } else {
            raw_per_page.min(100) as usize
        };
        found.truncate(per_page);
        let body: Vec<Value> = found.iter().map(render).collect();
        let mut resp = json_response(200, &Value::Array(body));
        // `Keyset::Pager#finalize` links to the next page whenever this one has a row, even a
        // short one, so the last page a client fetches is empty.
        if let Some(last) = found.last() {
            let key = if sort == "asc" {
                "id_after"
            } else {
                "id_before"
            };
            let link = page_link(ext, path, &params, key, last.id.to_string(), "next");
            set(resp.headers_mut(), "link", &link);
        }
        return Ok(resp);
    }
    let per_page = raw_per_page.clamp(1, 100) as usize;
    let page = page.max(1);
    let skip = (page as usize - 1).saturating_mul(per_page);
    let total = found.len();
    let rows: Vec<Value> = found.iter().skip(skip).take(per_page).map(render).collect();
    Ok(super::http::offset_response(
        rows, page, per_page, total, ext, path, &params,
    ))
}
