//! Repository search for `GET /v1/search`: candidates by name or comment;
//! the front-end keeps those the caller may pull.

use super::LegacyResult;
use crate::meta::legacy::RepoMatch;
use crate::registry::Registry;

/// Longest query looked for.
pub const MAX_QUERY: usize = 255;

impl Registry {
    /// Repositories whose name or comment contains `query` (ignoring case),
    /// in name order after `after`, at most `limit`.
    pub async fn v1_search(
        &self,
        query: &str,
        after: Option<&str>,
        limit: u32,
    ) -> LegacyResult<Vec<RepoMatch>> {
        let q: String = query
            .trim()
            .to_lowercase()
            .chars()
            .take(MAX_QUERY)
            .collect();
        Ok(self.meta.search_repos(&q, after, limit).await?)
    }
}
