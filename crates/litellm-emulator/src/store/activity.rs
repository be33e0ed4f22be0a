//! `/user/daily/activity`, and the usage the emulator records for it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{DailyRow, Store, Usage, extend, page_count, page_of, query_int};
use crate::{EmulatorError, Generation, UsageRecord, clock, reply::Reply};

impl Store {
    /// `GET /user/daily/activity`: usage per day, newest first, with totals in `metadata`.
    ///
    /// Like LiteLLM, it pages over rows of the daily table (one per user, day, model and key), not over days:
    /// a page of `page_size` rows is summed into days, so a page can hold fewer days than rows and one day can
    /// be split over two pages; `total_pages` and `has_more` count rows; and the `metadata` totals are those of
    /// the rows on this page only (`common_daily_activity.py`, `get_daily_activity`).
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
        // Older proxies compare the raw strings; a malformed date simply matches nothing. They also have no
        // `user_id` parameter: the master key sees every user's usage whatever `user_id` says.
        let user_filter = query.get("user_id").filter(|_| generation == Generation::Newer);
        let mut rows: Vec<&DailyRow> = self
            .daily
            .iter()
            .filter(|row| row.date.as_str() >= start.as_str() && row.date.as_str() <= end.as_str())
            .filter(|row| user_filter.is_none_or(|wanted| *wanted == row.user_id))
            .collect();
        // Newest day first; within a day in the order written (1.108.7 orders by `id`, which the emulator does not
        // have; 1.80.5 leaves it to the database).
        rows.sort_by(|a, b| b.date.cmp(&a.date));
        let total_rows = rows.len() as i64;
        let mut days: BTreeMap<&str, BTreeMap<&str, Usage>> = BTreeMap::new();
        let mut totals = Usage::default();
        for row in page_of(rows, page, page_size) {
            days.entry(&row.date).or_default().entry(&row.user_id).or_default().add(&row.usage);
            totals.add(&row.usage);
        }
        let total_pages = page_count(total_rows, page_size);
        let results: Vec<Value> = days.iter().rev().map(|(date, users)| self.day_json(date, users)).collect();
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
            "has_more": page.saturating_mul(page_size) < total_rows,
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

    /// Adds usage as the proxy's spend tracking would: to the user's running `spend` and to the daily table,
    /// in the row of that user, day, model and key (a new row if there is none yet).
    pub(crate) fn record_usage(&mut self, record: &UsageRecord) -> Result<(), EmulatorError> {
        if !clock::is_date(&record.date) {
            return Err(EmulatorError::InvalidDate(record.date.clone()));
        }
        if !record.spend.is_finite() || record.spend < 0.0 {
            return Err(EmulatorError::InvalidSpend(record.spend));
        }
        if let Some(user) = self.users.get_mut(&record.user_id) {
            user.spend += record.spend;
        }
        let usage = Usage {
            spend: record.spend,
            prompt_tokens: record.prompt_tokens,
            completion_tokens: record.completion_tokens,
            requests: record.requests,
        };
        let same = |row: &&mut DailyRow| {
            (&row.date, &row.user_id, &row.model, &row.api_key)
                == (&record.date, &record.user_id, &record.model, &record.api_key)
        };
        match self.daily.iter_mut().find(same) {
            Some(row) => row.usage.add(&usage),
            None => self.daily.push(DailyRow {
                date: record.date.clone(),
                user_id: record.user_id.clone(),
                model: record.model.clone(),
                api_key: record.api_key.clone(),
                usage,
            }),
        }
        Ok(())
    }
}
