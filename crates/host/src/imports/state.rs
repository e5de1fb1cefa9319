//! `troupe:pipeline/state`: keys under the granted prefixes, and event logs as far
//! as `event_logs` reaches, all of the invocation's tenant.

use troupe_core::State;
use wasmtime::component::{HasData, Linker};

use super::{Caller, Guest, reply};
use crate::bindings::{GuestError, GuestEvent, state};
use crate::manifest::{Access, Grants};
use crate::store::Ctx;

/// A component's state: the backend, if it was granted keys or event logs, and its
/// grants.
pub struct StateView<'a> {
    /// Who calls.
    pub caller: Caller<'a>,
    /// The backend; `None` without a `state` or `event_logs` grant.
    pub state: Option<&'a dyn State>,
    /// Its grants.
    pub grants: &'a Grants,
}

struct HasState;

impl HasData for HasState {
    type Data<'a> = StateView<'a>;
}

pub(super) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    state::add_to_linker::<Ctx, HasState>(linker, |ctx| {
        let env = &*ctx.env;
        StateView {
            caller: ctx.caller(),
            state: env.granted.state.as_deref(),
            grants: &env.granted.grants,
        }
    })
}

impl<'a> StateView<'a> {
    /// The backend when `key` is granted and the invocation's tenant's.
    fn key(&self, key: &str) -> Result<&'a dyn State, GuestError> {
        let s = self
            .state
            .filter(|_| self.grants.state_key(key))
            .ok_or_else(|| self.refuse_key(key))?;
        if !self.caller.tenant().owns_key(key) {
            return Err(self.caller.foreign(
                format!("state key `{key}`"),
                &format!("state keys are `<kind>/{}/<name>`", self.caller.tenant()),
            ));
        }
        Ok(s)
    }

    fn refuse_key(&self, key: &str) -> GuestError {
        self.caller.denied(
            format!("state key `{key}`"),
            "a prefix of it to `state`".into(),
        )
    }

    /// The backend when event logs are granted `wanted` and `subject` is the
    /// invocation's tenant's.
    fn log(&self, wanted: Access, subject: &str) -> Result<&'a dyn State, GuestError> {
        if !self.caller.tenant().owns_subject(subject) {
            return Err(self.caller.foreign(
                format!("the event log `{subject}`"),
                &format!("event-log subjects are `{}/<name>`", self.caller.tenant()),
            ));
        }
        self.state
            .filter(|_| self.grants.event_logs.allows(wanted))
            .ok_or_else(|| {
                let (verb, grant) = match wanted {
                    Access::Write => ("writing", "event_logs = \"write\""),
                    _ => ("reading", "event_logs = \"read\""),
                };
                self.caller
                    .denied(format!("{verb} the event log `{subject}`"), grant.into())
            })
    }
}

impl state::Host for StateView<'_> {
    async fn get(&mut self, key: String) -> Guest<Option<state::Entry>> {
        let s = match self.key(&key) {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        reply(s.get(&key).await.map(|e| {
            e.map(|e| state::Entry {
                value: e.value,
                version: e.version,
            })
        }))
    }

    async fn put(
        &mut self,
        key: String,
        value: Vec<u8>,
        expected_version: Option<u64>,
    ) -> Guest<u64> {
        match self.key(&key) {
            Ok(s) => reply(s.put(&key, &value, expected_version).await),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn delete(&mut self, key: String, expected_version: Option<u64>) -> Guest<bool> {
        match self.key(&key) {
            Ok(s) => reply(s.delete(&key, expected_version).await),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Lists only granted keys: a prefix wider than the grants is narrowed to them.
    async fn list_keys(&mut self, prefix: String) -> Guest<Vec<String>> {
        let Some(s) = self.state.filter(|_| self.grants.state_listing(&prefix)) else {
            return Ok(Err(self.refuse_key(&prefix)));
        };
        let tenant = self.caller.tenant();
        if !tenant.owns_prefix(&prefix) {
            return Ok(Err(self.caller.foreign(
                format!("keys under `{prefix}`"),
                &format!("list a prefix `<kind>/{tenant}/…`"),
            )));
        }
        let grants = self.grants;
        reply(s.list(&prefix).await.map(|keys| {
            keys.into_iter()
                .filter(|k| grants.state_key(k) && tenant.owns_key(k))
                .collect()
        }))
    }

    async fn append_event(&mut self, subject: String, event: GuestEvent) -> Guest<u64> {
        match self.log(Access::Write, &subject) {
            Ok(s) => reply(s.append_event(&subject, &event.into()).await),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn read_events(&mut self, subject: String) -> Guest<Vec<GuestEvent>> {
        match self.log(Access::Read, &subject) {
            Ok(s) => reply(
                s.read_events(&subject)
                    .await
                    .map(|v| v.into_iter().map(GuestEvent::from).collect()),
            ),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn delete_events(&mut self, subject: String) -> Guest<u64> {
        match self.log(Access::Write, &subject) {
            Ok(s) => reply(s.delete_events(&subject).await),
            Err(e) => Ok(Err(e)),
        }
    }
}
