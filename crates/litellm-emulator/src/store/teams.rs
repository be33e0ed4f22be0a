//! `/team/new`, `/team/member_add`, `/team/member_delete` and `/team/delete`.

use serde_json::{Value, json};

use super::{ADMIN_USER_ID, Member, Store, Team, User, View, extend};
use crate::{
    Generation,
    clock::Instant,
    reply::{Issue, Kind, Param, Reply, as_f64, check_body, parse_body, validated_body},
};

impl Store {
    /// `POST /team/new`. The master key's user joins as an admin, which creates its user row if needed.
    pub(crate) fn team_new(&mut self, bytes: &[u8]) -> Reply {
        let generation = self.generation;
        let body = match parse_body(generation, bytes) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let schema = [
            ("team_id", Kind::Str),
            ("team_alias", Kind::Str),
            ("metadata", Kind::Object),
            ("models", Kind::List),
            ("max_budget", Kind::Float),
        ];
        let issues = check_body(&body, &schema);
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        let team_id = match body.get("team_id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => self.uuid(),
        };
        if self.teams.contains_key(&team_id) {
            let message = format!("{{'error': 'Team id = {team_id} already exists. Please use a different team id.'}}");
            return Reply::envelope(400, message, "internal_server_error", generation.param());
        }
        let now = Instant::now();
        let team = Team {
            team_id: team_id.clone(),
            team_alias: body.get("team_alias").and_then(Value::as_str).map(str::to_owned),
            members: Vec::new(),
            metadata: body.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default(),
            models: body.get("models").and_then(Value::as_array).cloned().unwrap_or_default(),
            max_budget: body.get("max_budget").and_then(as_f64),
            created_at: now.timestamp(),
            updated_at: now.timestamp(),
        };
        self.teams.insert(team_id.clone(), team);
        self.join_team(&team_id, ADMIN_USER_ID, "admin", now);
        self.team_reply(&team_id, json!({}))
    }

    /// Adds a membership on both sides; a user without a row gets one (role `internal_user`), as LiteLLM does.
    pub(super) fn join_team(&mut self, team_id: &str, user_id: &str, role: &str, now: Instant) {
        if !self.users.contains_key(user_id) {
            let seq = self.next_seq();
            let mut user = User::new(user_id.to_owned(), &now.timestamp(), seq);
            user.user_role = Some("internal_user".to_owned());
            self.users.insert(user_id.to_owned(), user);
        }
        let email = self.users.get(user_id).and_then(|user| user.user_email.clone());
        if let Some(user) = self.users.get_mut(user_id)
            && !user.teams.iter().any(|team| team == team_id)
        {
            user.teams.push(team_id.to_owned());
            user.updated_at = now.timestamp();
        }
        if let Some(team) = self.teams.get_mut(team_id)
            && !team.members.iter().any(|member| member.user_id == user_id)
        {
            team.members.push(Member { user_id: user_id.to_owned(), user_email: email, role: role.to_owned() });
            team.updated_at = now.timestamp();
        }
    }

    /// `POST /team/member_add` with one member or a list of them.
    pub(crate) fn team_member_add(&mut self, bytes: &[u8]) -> Reply {
        let generation = self.generation;
        let body = match parse_body(generation, bytes) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let mut issues = Vec::new();
        for field in ["team_id", "member"] {
            if body.get(field).is_none_or(Value::is_null) {
                issues.push(Issue::new("missing", &["body", field], "Field required", Value::Object(body.clone())));
            }
        }
        issues.extend(check_body(&body, &[("team_id", Kind::Str)]));
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        let team_id = body.get("team_id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let members: Vec<Value> = match body.get("member") {
            Some(Value::Array(items)) => items.clone(),
            Some(item) => vec![item.clone()],
            None => Vec::new(),
        };
        let Some(team) = self.teams.get(&team_id) else {
            // Observed as 404 on both generations (not 400).
            return Reply::detail(
                404,
                format!("Team doesn't exist in db. Team={team_id}. Create team via `/team/new` call."),
            );
        };
        let mut wanted = Vec::new();
        for member in &members {
            let email = member.get("user_email").and_then(Value::as_str).map(str::to_owned);
            let user_id = match member.get("user_id").and_then(Value::as_str) {
                Some(id) => Some(id.to_owned()),
                None => email.as_deref().and_then(|email| self.user_with_email(email)).map(|u| u.user_id.clone()),
            };
            let Some(user_id) = user_id else {
                let issue = Issue::new(
                    "value_error",
                    &["body", "member"],
                    "Value error, Either user_id or user_email must be provided",
                    member.clone(),
                );
                return Reply::invalid(generation, vec![issue]);
            };
            if team.members.iter().any(|existing| existing.user_id == user_id) {
                let existing: Vec<String> = team.members.iter().map(member_repr).collect();
                let message = format!(
                    "User already in team. Member: user_id={user_id}, user_email={}. Existing members=[{}]",
                    py_str(email.as_deref()),
                    existing.join(", ")
                );
                return Reply::envelope(400, message, "team_member_already_in_team", Param::Named("member"));
            }
            let role = member.get("role").and_then(Value::as_str).unwrap_or("user").to_owned();
            wanted.push((user_id, role));
        }
        let now = Instant::now();
        let mut updated = Vec::new();
        for (user_id, role) in &wanted {
            // 1.108.7 answers an existing member's row as it was before the team was appended (the append is a
            // separate write); a user it had to create, and every user on 1.80.5, shows the team.
            let before = match (generation, self.users.get(user_id)) {
                (Generation::Newer, Some(user)) => Some(self.user_json(user, View::List)),
                _ => None,
            };
            self.join_team(&team_id, user_id, role, now);
            let after = self.users.get(user_id).map(|user| self.user_json(user, View::List));
            updated.extend(before.or(after));
        }
        self.team_reply(&team_id, json!({ "updated_users": updated, "updated_team_memberships": [] }))
    }

    /// `POST /team/member_delete`.
    pub(crate) fn team_member_delete(&mut self, bytes: &[u8]) -> Reply {
        let generation = self.generation;
        let body = match validated_body(
            generation,
            bytes,
            &[("team_id", Kind::Str), ("user_id", Kind::Str), ("user_email", Kind::Str)],
        ) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        let team_id = body.get("team_id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let user_id = match body.get("user_id").and_then(Value::as_str) {
            Some(id) => Some(id.to_owned()),
            None => body
                .get("user_email")
                .and_then(Value::as_str)
                .and_then(|email| self.user_with_email(email))
                .map(|user| user.user_id.clone()),
        };
        let Some(team) = self.teams.get_mut(&team_id) else {
            return Reply::detail(400, format!("Team id={team_id} does not exist in db"));
        };
        let Some(user_id) = user_id.filter(|id| team.members.iter().any(|member| member.user_id == *id)) else {
            return Reply::detail(400, "User not found in team");
        };
        let now = Instant::now();
        team.members.retain(|member| member.user_id != user_id);
        team.updated_at = now.timestamp();
        if let Some(user) = self.users.get_mut(&user_id) {
            user.teams.retain(|team| *team != team_id);
            user.updated_at = now.timestamp();
        }
        self.team_reply(&team_id, json!({}))
    }

    /// A team as the team endpoints answer it, with `extra` fields.
    fn team_reply(&self, team_id: &str, extra: Value) -> Reply {
        match self.teams.get(team_id) {
            Some(team) => {
                let mut answer = self.team_json(team);
                extend(&mut answer, extra);
                Reply::ok(answer)
            }
            // Callers have just written the team; this only keeps the code free of panics.
            None => Reply::detail(404, format!("Team not found, passed team_id={team_id}")),
        }
    }

    /// `POST /team/delete`: every id must exist; members leave, the team's keys go.
    pub(crate) fn team_delete(&mut self, bytes: &[u8]) -> Reply {
        let generation = self.generation;
        let body = match parse_body(generation, bytes) {
            Ok(body) => body,
            Err(reply) => return reply,
        };
        if body.get("team_ids").is_none() {
            let issue = Issue::new("missing", &["body", "team_ids"], "Field required", Value::Object(body.clone()));
            return Reply::invalid(generation, vec![issue]);
        }
        let issues = check_body(&body, &[("team_ids", Kind::StrList)]);
        if !issues.is_empty() {
            return Reply::invalid(generation, issues);
        }
        let ids: Vec<String> = body
            .get("team_ids")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        if let Some(missing) = ids.iter().find(|id| !self.teams.contains_key(*id)) {
            return Reply::detail(404, format!("Team not found, passed team_id={missing}"));
        }
        for id in &ids {
            self.teams.remove(id);
            self.keys.retain(|_, key| key.team_id.as_ref() != Some(id));
            for user in self.users.values_mut() {
                user.teams.retain(|team| team != id);
            }
        }
        Reply::ok(json!({ "deleted_teams": ids }))
    }
}

/// `Member(user_id='a', user_email=None, role='admin')`, as LiteLLM prints a team member in an error.
fn member_repr(member: &Member) -> String {
    format!(
        "Member(user_id='{}', user_email={}, role='{}')",
        member.user_id,
        py_repr(member.user_email.as_deref()),
        member.role
    )
}

fn py_repr(text: Option<&str>) -> String {
    text.map(|text| format!("'{text}'")).unwrap_or_else(|| "None".to_owned())
}

fn py_str(text: Option<&str>) -> String {
    text.unwrap_or("None").to_owned()
}
