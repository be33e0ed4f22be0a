//! Rows as the proxies print them; each generation adds or drops fields, and so does each endpoint.

use serde_json::{Value, json};

use super::{Key, Store, Team, User, View, extend};
use crate::{Generation, clock::Instant};

impl Store {
    pub(super) fn user_json(&self, user: &User, view: View) -> Value {
        let mut row = json!({
            "user_id": user.user_id,
            "user_alias": user.user_alias,
            "team_id": null,
            "sso_user_id": user.sso_user_id,
            "organization_id": null,
            "object_permission_id": user.object_permission_id,
            "teams": user.teams,
            "user_role": user.user_role,
            "max_budget": user.max_budget,
            "spend": user.spend,
            "user_email": user.user_email,
            "models": user.models,
            "metadata": user.metadata,
            "max_parallel_requests": user.max_parallel_requests,
            "tpm_limit": user.tpm_limit,
            "rpm_limit": user.rpm_limit,
            "budget_duration": user.budget_duration,
            "budget_reset_at": user.budget_reset_at,
            "allowed_cache_controls": user.allowed_cache_controls,
            "model_spend": {},
            "model_max_budget": user.model_max_budget,
            "created_at": user.created_at,
            "updated_at": user.updated_at,
            "organization_memberships": if view == View::Info { json!([]) } else { Value::Null },
            // Stored, but neither generation reads it back on the user row.
            "object_permission": null,
        });
        if view != View::List {
            extend(
                &mut row,
                json!({"litellm_organization_table": null, "invitations_created": null,
                "invitations_updated": null, "invitations_user": null}),
            );
        }
        match self.generation {
            Generation::Newer => {
                extend(
                    &mut row,
                    json!({"verified_subjects": null, "password_reset_required": null,
                    "last_breach_check_at": null, "policies": []}),
                );
                if view == View::Info {
                    extend(&mut row, json!({ "model_max_budget_usage": {} }));
                }
            }
            Generation::Older => {
                if view != View::List {
                    extend(&mut row, json!({ "password": null }));
                }
            }
        }
        row
    }

    /// A key as `/user/info` lists it: the hash as `token`, never the key.
    pub(super) fn key_item(&self, key: &Key) -> Value {
        let mut item = json!({
            "token": key.hash,
            "key_name": key.key_name,
            "key_alias": key.key_alias,
            "soft_budget_cooldown": false,
            "spend": 0.0,
            "expires": key.expires.map(Instant::timestamp),
            "models": key.models,
            "aliases": key.aliases,
            "config": {},
            "user_id": key.user_id,
            "team_id": key.team_id,
            "permissions": {},
            "max_parallel_requests": key.max_parallel_requests,
            "metadata": key.metadata,
            "blocked": null,
            "tpm_limit": key.tpm_limit,
            "rpm_limit": key.rpm_limit,
            "max_budget": key.max_budget,
            "budget_duration": key.budget_duration,
            "budget_reset_at": null,
            "allowed_cache_controls": [],
            "allowed_routes": [],
            "model_spend": {},
            "model_max_budget": {},
            "budget_id": null,
            "organization_id": null,
            "object_permission_id": null,
            "created_at": key.created_at,
            "created_by": key.created_by,
            "updated_at": key.updated_at,
            "updated_by": key.created_by,
            "litellm_budget_table": null,
            "object_permission": null,
            "rotation_count": 0,
            "auto_rotate": false,
            "rotation_interval": null,
            "last_rotation_at": null,
            "key_rotation_at": null,
            // LiteLLM prints Python's None for a key without a team.
            "team_alias": "None",
        });
        if self.generation == Generation::Newer {
            extend(
                &mut item,
                json!({"total_spend": 0.0, "router_settings": {}, "agent_id": null, "project_id": null,
                "tpd_limit": null, "key_type": "default", "policies": [], "access_group_ids": [],
                "budget_fallbacks": {}, "settings_updated_at": null, "last_active": null, "budget_limits": null}),
            );
        }
        item
    }

    /// A key as `/key/list?return_full_object=true` shows it: the key row as LiteLLM's auth object, with the
    /// team, user and end-user fields it adds (empty here).
    pub(super) fn key_object(&self, key: &Key) -> Value {
        let mut object = self.key_item(key);
        extend(
            &mut object,
            json!({"team_alias": null, "team_spend": null, "team_max_budget": null, "team_models": [],
            "team_blocked": false, "team_metadata": null, "soft_budget": null, "end_user_id": null,
            "api_key": null, "user_role": null, "user_email": null, "org_id": null, "last_refreshed_at": null}),
        );
        if let Value::Object(map) = &mut object {
            // The auth object names the organisation `org_id`.
            map.remove("organization_id");
        }
        object
    }

    pub(super) fn team_json(&self, team: &Team) -> Value {
        let members: Vec<Value> = team
            .members
            .iter()
            .map(|member| json!({ "user_id": member.user_id, "user_email": member.user_email, "role": member.role }))
            .collect();
        let mut answer = json!({
            "team_alias": team.team_alias,
            "team_id": team.team_id,
            "organization_id": null,
            "admins": [],
            "members": [],
            "members_with_roles": members,
            "team_member_permissions": [],
            "metadata": team.metadata,
            "tpm_limit": null,
            "rpm_limit": null,
            "max_budget": team.max_budget,
            "budget_duration": null,
            "models": team.models,
            "blocked": false,
            "spend": 0.0,
            "max_parallel_requests": null,
            "budget_reset_at": null,
            "model_id": null,
            "litellm_model_table": null,
            "object_permission": null,
            "object_permission_id": null,
            "created_at": team.created_at,
            "updated_at": team.updated_at,
        });
        if self.generation == Generation::Newer {
            extend(
                &mut answer,
                json!({"tpd_limit": null, "soft_budget": null, "budget_limits": null,
                "router_settings": {}, "access_group_ids": [], "default_team_member_models": [], "model_spend": {},
                "model_max_budget": {}, "policies": [], "allow_team_guardrail_config": false}),
            );
        }
        answer
    }
}
