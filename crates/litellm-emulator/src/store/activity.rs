//! `/user/daily/activity`, and the usage the emulator records for it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Store, Usage, extend, query_int};
use crate::{EmulatorError, Generation, clock, reply::Reply};

impl Store {
    /// `GET /user/daily/activity`: usage per day, newest first, with totals in `metadata`.
    pub(crate) fn daily_activity(&self, query: &BTreeMap<String, String>) -> Reply {
        let generation = self.generation;
        let (Some(start), Some(end)) = (query.get("start_date"), query.get("end_date")) else {
            return Reply::detail(400, "Please provide start_date and end_date");
        };
        if generation == Generation::Newer && !(clock::is_date(start) && clock::is_date(end)) {
            return Reply::detail(400, "start_date and end_date must be valid YYYY-MM-DD dates");
        }
        let mut issues = Vec::new();
        let page = query_int(query, "page", 1, 1, None, &mut issues);
        let page_size = query_int(query, "page_size", 50, 1, Some(1000), &mut issues);
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        // Older proxies compare the raw strings; a malformed date simply matches nothing.
        let user_filter = query.get("user_id");
        let mut days: BTreeMap<&str, BTreeMap<&str, Usage>> = BTreeMap::new();
        for ((date, user_id), usage) in &self.daily {
            if date.as_str() < start.as_str() || date.as_str() > end.as_str() {
                continue;
            }
            if user_filter.is_some_and(|wanted| wanted != user_id) {
                continue;
            }
            days.entry(date).or_default().entry(user_id).or_default().add(usage);
        }
        let mut totals = Usage::default();
        for users in days.values() {
            for usage in users.values() {
                totals.add(usage);
            }
        }
        let total_pages = (days.len() as i64 + page_size - 1) / page_size;
        let start_index = usize::try_from((page - 1).saturating_mul(page_size)).unwrap_or(usize::MAX);
        let results: Vec<Value> = days
            .iter()
            .rev()
            .skip(start_index)
            .take(usize::try_from(page_size).unwrap_or(0))
            .map(|(date, users)| self.day_json(date, users))
            .collect();
        let mut metadata = json!({
            "total_spend": totals.spend,
            "total_prompt_tokens": totals.prompt_tokens,
            "total_completion_tokens": totals.completion_tokens,
            "total_tokens": totals.prompt_tokens + totals.completion_tokens,
            "total_api_requests": totals.requests,
            "total_successful_requests": totals.requests,
            "total_failed_requests": 0,
            "total_cache_read_input_tokens": 0,
            "total_cache_creation_input_tokens": 0,
            "page": page,
            "total_pages": total_pages,
            "has_more": page < total_pages,
        });
        if generation == Generation::Newer {
            extend(
                &mut metadata,
                json!({"total_flat_cost": 0.0, "total_ptu_hours": 0.0,
                "total_compression_saved_tokens": 0, "total_compression_savings_spend": 0.0,
                "total_prompt_caching_savings_spend": 0.0, "total_gateway_injected_caching_savings_spend": 0.0,
                "total_autorouter_savings_spend": 0.0, "total_response_time_ms": 0, "total_timed_requests": 0,
                "api_key_limit": null, "total_api_keys": null, "entity_total_api_keys": null}),
            );
        }
        Reply::ok(json!({ "results": results, "metadata": metadata }))
    }

    fn day_json(&self, date: &str, users: &BTreeMap<&str, Usage>) -> Value {
        let mut day = Usage::default();
        let mut entities = Map::new();
        for (user_id, usage) in users {
            day.add(usage);
            entities.insert(
                (*user_id).to_owned(),
                json!({ "metrics": self.metrics_json(usage), "metadata": {}, "api_key_breakdown": {} }),
            );
        }
        let mut breakdown = json!({
            "models": {}, "model_groups": {}, "providers": {}, "api_keys": {}, "mcp_servers": {},
            "entities": entities,
        });
        if self.generation == Generation::Newer {
            extend(&mut breakdown, json!({ "endpoints": {} }));
        }
        json!({ "date": date, "metrics": self.metrics_json(&day), "breakdown": breakdown })
    }

    fn metrics_json(&self, usage: &Usage) -> Value {
        let mut metrics = json!({
            "spend": usage.spend,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "successful_requests": usage.requests,
            "failed_requests": 0,
            "api_requests": usage.requests,
        });
        if self.generation == Generation::Newer {
            extend(
                &mut metrics,
                json!({"flat_cost": 0.0, "ptu_hours": 0.0, "compression_saved_tokens": 0,
                "compression_savings_spend": 0.0, "prompt_caching_savings_spend": 0.0,
                "gateway_injected_caching_savings_spend": 0.0, "autorouter_savings_spend": 0.0,
                "total_response_time_ms": 0, "timed_requests": 0}),
            );
        }
        metrics
    }

    /// Adds usage as the proxy's spend tracking would: to the user's running `spend` and to the daily table.
    pub(crate) fn record_spend(
        &mut self,
        user_id: &str,
        date: &str,
        spend: f64,
        prompt_tokens: u64,
        completion_tokens: u64,
        requests: u64,
    ) -> Result<(), EmulatorError> {
        if !clock::is_date(date) {
            return Err(EmulatorError::InvalidDate(date.to_owned()));
        }
        if !spend.is_finite() || spend < 0.0 {
            return Err(EmulatorError::InvalidSpend(spend));
        }
        if let Some(user) = self.users.get_mut(user_id) {
            user.spend += spend;
        }
        let usage = Usage { spend, prompt_tokens, completion_tokens, requests };
        self.daily.entry((date.to_owned(), user_id.to_owned())).or_default().add(&usage);
        Ok(())
    }
}
