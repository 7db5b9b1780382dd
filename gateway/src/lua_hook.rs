//! The optional Lua access hook: the OpenResty habit of an access-phase
//! script for custom rules (a block list, a header check), without
//! rebuilding the gateway. Off unless `GATEWAY_LUA_HOOK` names a script.
//!
//! The script defines a global `access(request)`; `request` is a table
//! `{method, path, item, user}` (`item`/`user` nil when absent). It
//! returns nothing to let the request through, or `status, reason` to
//! reject it (status 400–599). See `lua/gateway_access.lua`.
//!
//! Each worker thread keeps its own Lua state with the script loaded once;
//! a reload compiles the new text first (a broken script is refused and
//! the old one stays), then bumps a generation that each thread notices on
//! its next request and reloads. A call is bounded: a script running over
//! [`MAX_CALL`] is stopped, and memory is capped at [`MEMORY_LIMIT`].
//!
//! A hook that fails at run time lets the request through (logged and
//! counted): a broken custom rule must not take the sale down.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mlua::{Function, HookTriggers, Lua, Value, VmState};
use parking_lot::RwLock;

use crate::metrics::HOOK_ERRORS;

/// Longest a single `access` call may run.
pub const MAX_CALL: Duration = Duration::from_millis(50);
/// Memory one Lua state may use.
pub const MEMORY_LIMIT: usize = 16 << 20;

/// A hook that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The script file could not be read.
    #[error("cannot read the hook script {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The script does not compile or defines no `access` function.
    #[error("bad hook script {name}: {error}")]
    Script {
        /// The script's name.
        name: String,
        /// Lua's message.
        error: String,
    },
}

/// What the hook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Answer `status` with `reason`.
    Reject {
        /// HTTP status (400–599).
        status: u16,
        /// Said in the error body.
        reason: String,
    },
}

/// What the script sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct HookRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path.
    pub path: &'a str,
    /// Item, for purchase routes.
    pub item: Option<&'a str>,
    /// User, when the request names one.
    pub user: Option<&'a str>,
}

#[derive(Debug)]
struct Script {
    name: String,
    code: String,
}

/// The hook, shared by every worker thread.
#[derive(Debug)]
pub struct LuaHook {
    id: usize,
    path: Option<PathBuf>,
    script: RwLock<Arc<Script>>,
    generation: AtomicU64,
}

/// One thread's loaded copy of a hook.
struct Loaded {
    generation: u64,
    // Kept alive with its function.
    _lua: Lua,
    access: Function,
}

thread_local! {
    static LOADED: RefCell<HashMap<usize, Loaded>> = RefCell::new(HashMap::new());
    static CALL_STARTED: RefCell<Option<Instant>> = const { RefCell::new(None) };
}

fn script_error(name: &str, error: impl std::fmt::Display) -> HookError {
    HookError::Script {
        name: name.to_owned(),
        error: error.to_string(),
    }
}

/// A fresh, bounded Lua state with `script` loaded; its `access` function.
fn load(script: &Script) -> Result<(Lua, Function), HookError> {
    let lua = Lua::new();
    lua.set_memory_limit(MEMORY_LIMIT)
        .map_err(|e| script_error(&script.name, e))?;
    lua.set_hook(HookTriggers::new().every_nth_instruction(10_000), |_, _| {
        let over =
            CALL_STARTED.with(|started| started.borrow().is_some_and(|at| at.elapsed() > MAX_CALL));
        if over {
            Err(mlua::Error::runtime(format!(
                "the access hook ran over {MAX_CALL:?}"
            )))
        } else {
            Ok(VmState::Continue)
        }
    })
    .map_err(|e| script_error(&script.name, e))?;
    lua.load(script.code.as_str())
        .set_name(script.name.as_str())
        .exec()
        .map_err(|e| script_error(&script.name, e))?;
    let access: Function = lua
        .globals()
        .get("access")
        .map_err(|_| script_error(&script.name, "it defines no global function `access`"))?;
    Ok((lua, access))
}

impl LuaHook {
    /// A hook from `code` named `name` (checked now).
    pub fn new(name: &str, code: &str) -> Result<Self, HookError> {
        static IDS: AtomicUsize = AtomicUsize::new(0);
        let script = Script {
            name: name.to_owned(),
            code: code.to_owned(),
        };
        load(&script)?;
        Ok(LuaHook {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            path: None,
            script: RwLock::new(Arc::new(script)),
            generation: AtomicU64::new(0),
        })
    }

    /// A hook from the script at `path` (reloadable from it).
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, HookError> {
        let path = path.into();
        let code = std::fs::read_to_string(&path).map_err(|error| HookError::Read {
            path: path.clone(),
            error,
        })?;
        let mut hook = LuaHook::new(&path.display().to_string(), &code)?;
        hook.path = Some(path);
        Ok(hook)
    }

    /// Replaces the script with `code`; a script that does not load is
    /// refused and the current one stays.
    pub fn reload(&self, code: &str) -> Result<(), HookError> {
        let name = self.script.read().name.clone();
        let script = Script {
            name,
            code: code.to_owned(),
        };
        load(&script)?;
        *self.script.write() = Arc::new(script);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Rereads the script from its file (see [`Self::reload`]).
    pub fn reload_from_file(&self) -> Result<(), HookError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let code = std::fs::read_to_string(path).map_err(|error| HookError::Read {
            path: path.clone(),
            error,
        })?;
        self.reload(&code)
    }

    /// Runs the script on `request`.
    pub fn check(&self, request: &HookRequest<'_>) -> Verdict {
        match self.call(request) {
            Ok(verdict) => verdict,
            Err(e) => {
                metrics::counter!(HOOK_ERRORS).increment(1);
                tracing::warn!(error = %e, "the access hook failed; letting the request through");
                Verdict::Allow
            }
        }
    }

    fn call(&self, request: &HookRequest<'_>) -> Result<Verdict, String> {
        let generation = self.generation.load(Ordering::Acquire);
        LOADED.with(|loaded| {
            let mut loaded = loaded.borrow_mut();
            let stale = loaded
                .get(&self.id)
                .is_none_or(|l| l.generation != generation);
            if stale {
                let script = Arc::clone(&self.script.read());
                let (lua, access) = load(&script).map_err(|e| e.to_string())?;
                loaded.insert(
                    self.id,
                    Loaded {
                        generation,
                        _lua: lua,
                        access,
                    },
                );
            }
            let state = loaded.get(&self.id).expect("just loaded");
            let lua = &state._lua;
            let table = lua.create_table().map_err(|e| e.to_string())?;
            let fill = || -> mlua::Result<()> {
                table.raw_set("method", request.method)?;
                table.raw_set("path", request.path)?;
                table.raw_set("item", request.item)?;
                table.raw_set("user", request.user)?;
                Ok(())
            };
            fill().map_err(|e| e.to_string())?;
            CALL_STARTED.with(|started| *started.borrow_mut() = Some(Instant::now()));
            let result = state.access.call::<(Value, Value)>(table);
            CALL_STARTED.with(|started| *started.borrow_mut() = None);
            match result.map_err(|e| e.to_string())? {
                (Value::Nil, _) | (Value::Boolean(true), _) => Ok(Verdict::Allow),
                (Value::Integer(status), reason) if (400..=599).contains(&status) => {
                    let reason = match reason {
                        Value::String(s) => s.to_string_lossy(),
                        _ => "rejected".to_owned(),
                    };
                    Ok(Verdict::Reject {
                        status: status as u16,
                        reason,
                    })
                }
                (other, _) => Err(format!(
                    "access returned {other:?}; expected nothing, or a status 400-599 and a reason"
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: HookRequest<'static> = HookRequest {
        method: "POST",
        path: "/api/seckill/sku",
        item: Some("sku"),
        user: Some("mallory"),
    };

    #[test]
    fn a_hook_rejects_allows_and_reloads() {
        let hook = LuaHook::new(
            "test",
            "function access(r) if r.user == 'mallory' then return 403, 'blocked: ' .. r.item end end",
        )
        .unwrap();
        assert_eq!(
            hook.check(&REQUEST),
            Verdict::Reject {
                status: 403,
                reason: "blocked: sku".into()
            }
        );
        let alice = HookRequest {
            user: Some("alice"),
            ..REQUEST
        };
        assert_eq!(hook.check(&alice), Verdict::Allow);

        // A broken script is refused and the old one stays.
        assert!(hook.reload("function access(r) return 429").is_err());
        assert!(hook.reload("x = 1").is_err());
        assert!(matches!(
            hook.check(&REQUEST),
            Verdict::Reject { status: 403, .. }
        ));
        hook.reload("function access(r) return 429, 'slow down' end")
            .unwrap();
        assert!(matches!(
            hook.check(&alice),
            Verdict::Reject { status: 429, .. }
        ));
    }

    #[test]
    fn a_failing_or_runaway_hook_lets_requests_through() {
        for code in [
            "function access(r) error('boom') end",
            "function access(r) return 200, 'not an error status' end",
            "function access(r) while true do end end",
        ] {
            let hook = LuaHook::new("test", code).unwrap();
            let started = Instant::now();
            assert_eq!(hook.check(&REQUEST), Verdict::Allow, "{code}");
            assert!(started.elapsed() < Duration::from_secs(5), "{code}");
        }
    }
}
