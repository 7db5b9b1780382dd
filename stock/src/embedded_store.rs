//! The embedded stock store: the same `lua/*.lua` files, run in an
//! embedded Lua 5.1 (Redis's version) over an in-process keyspace.
//!
//! A small `redis.call` shim implements exactly the commands the scripts
//! use (GET, SET, DEL, EXISTS, INCR, DECR, INCRBY, DECRBY, HGET, HMGET,
//! HSET, HDEL, HGETALL, HLEN, PUBLISH) with Redis's conventions: a missing key reads as `false`,
//! integer replies become Lua numbers, `SET` answers a status table, and an
//! unknown command or a wrong type raises an error that aborts the script.
//! One mutex around the Lua state runs one script at a time, which makes
//! each script atomic exactly as Redis does. Published flag messages go to
//! a broadcast channel instead of Redis pub/sub.
//!
//! This is the store of the all-in-one process with no services installed;
//! the parity test holds it to Redis's behaviour.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use mlua::{Function, Lua, Value, Variadic};
use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::error::StockError;
use crate::reply::Reply;
use crate::scripts::{ALL, LuaScript};
use crate::stock_store::ScriptRunner;

/// A value in the keyspace.
#[derive(Debug, Clone)]
enum Entry {
    Text(String),
    Hash(HashMap<String, String>),
}

type Keyspace = Arc<Mutex<HashMap<String, Entry>>>;

struct LuaState {
    lua: Lua,
    scripts: HashMap<&'static str, Function>,
}

/// Runs the scripts in-process.
pub struct EmbeddedScripts {
    state: Mutex<LuaState>,
    published: broadcast::Sender<(String, String)>,
}

impl std::fmt::Debug for EmbeddedScripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedScripts").finish_non_exhaustive()
    }
}

impl EmbeddedScripts {
    /// A fresh, empty store with every script compiled.
    pub fn new() -> Result<Self, StockError> {
        let lua_error = |e: mlua::Error| StockError::Store(format!("embedded Lua: {e}"));
        let lua = Lua::new();
        let keyspace: Keyspace = Arc::new(Mutex::new(HashMap::new()));
        let (published, _) = broadcast::channel(1024);
        let redis = lua.create_table().map_err(lua_error)?;
        let call = {
            let keyspace = Arc::clone(&keyspace);
            let published = published.clone();
            lua.create_function(move |lua, args: Variadic<Value>| {
                let args = args
                    .iter()
                    .map(argument)
                    .collect::<mlua::Result<Vec<String>>>()?;
                call(lua, &keyspace, &published, &args)
            })
            .map_err(lua_error)?
        };
        redis.set("call", call).map_err(lua_error)?;
        lua.globals().set("redis", redis).map_err(lua_error)?;
        let mut scripts = HashMap::new();
        for script in ALL {
            let function = lua
                .load(script.source)
                .set_name(script.name)
                .into_function()
                .map_err(lua_error)?;
            scripts.insert(script.name, function);
        }
        Ok(EmbeddedScripts {
            state: Mutex::new(LuaState { lua, scripts }),
            published,
        })
    }

    /// Messages the scripts published, as (channel, payload).
    pub fn subscribe(&self) -> broadcast::Receiver<(String, String)> {
        self.published.subscribe()
    }

    fn run_now(
        &self,
        script: &LuaScript,
        keys: &[String],
        args: &[String],
    ) -> Result<Reply, StockError> {
        let failed = |e: mlua::Error| StockError::Store(format!("{} failed: {e}", script.name));
        let state = self.state.lock();
        let function = state
            .scripts
            .get(script.name)
            .ok_or_else(|| StockError::Invalid(format!("unknown script {}", script.name)))?;
        let globals = state.lua.globals();
        globals
            .set(
                "KEYS",
                state
                    .lua
                    .create_sequence_from(keys.iter().cloned())
                    .map_err(failed)?,
            )
            .map_err(failed)?;
        globals
            .set(
                "ARGV",
                state
                    .lua
                    .create_sequence_from(args.iter().cloned())
                    .map_err(failed)?,
            )
            .map_err(failed)?;
        let value: Value = function.call(()).map_err(failed)?;
        to_reply(&value).map_err(|e| StockError::Store(format!("{}: {e}", script.name)))
    }
}

#[async_trait]
impl ScriptRunner for EmbeddedScripts {
    async fn run(
        &self,
        script: &LuaScript,
        keys: &[String],
        args: &[String],
    ) -> Result<Reply, StockError> {
        // A script is a few microseconds of in-memory work: run it here.
        self.run_now(script, keys, args)
    }
}

/// A `redis.call` argument as Redis sees it: strings as they are, numbers
/// in their shortest text form.
fn argument(value: &Value) -> mlua::Result<String> {
    match value {
        Value::String(s) => Ok(s.to_str()?.to_owned()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => Ok((*n as i64).to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(mlua::Error::RuntimeError(
            "Lua redis.call() command arguments must be strings or integers".into(),
        )),
    }
}

fn error(message: &str) -> mlua::Error {
    mlua::Error::RuntimeError(message.to_owned())
}

const WRONG_TYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

fn integer_of(text: &str) -> mlua::Result<i64> {
    text.parse()
        .map_err(|_| error("ERR value is not an integer or out of range"))
}

/// The shim: one Redis command against the in-process keyspace.
fn call(
    lua: &Lua,
    keyspace: &Keyspace,
    published: &broadcast::Sender<(String, String)>,
    args: &[String],
) -> mlua::Result<Value> {
    let Some(command) = args.first() else {
        return Err(error("ERR wrong number of arguments for redis.call"));
    };
    let arity = |n: usize| {
        if args.len() < n {
            Err(error(&format!(
                "ERR wrong number of arguments for '{command}' command"
            )))
        } else {
            Ok(())
        }
    };
    let text = |s: &str| lua.create_string(s).map(Value::String);
    let int = |i: i64| Ok(Value::Integer(i));
    let mut keys = keyspace.lock();
    match command.to_ascii_uppercase().as_str() {
        "GET" => {
            arity(2)?;
            match keys.get(&args[1]) {
                Some(Entry::Text(v)) => text(v),
                Some(Entry::Hash(_)) => Err(error(WRONG_TYPE)),
                None => Ok(Value::Boolean(false)),
            }
        }
        "SET" => {
            arity(3)?;
            let nx = args.get(3).is_some_and(|a| a.eq_ignore_ascii_case("NX"));
            if nx && keys.contains_key(&args[1]) {
                return Ok(Value::Boolean(false));
            }
            keys.insert(args[1].clone(), Entry::Text(args[2].clone()));
            let ok = lua.create_table()?;
            ok.set("ok", "OK")?;
            Ok(Value::Table(ok))
        }
        "DEL" => {
            arity(2)?;
            int(args[1..]
                .iter()
                .filter(|k| keys.remove(*k).is_some())
                .count() as i64)
        }
        "EXISTS" => {
            arity(2)?;
            int(args[1..].iter().filter(|k| keys.contains_key(*k)).count() as i64)
        }
        "INCR" | "DECR" | "INCRBY" | "DECRBY" => {
            let by = match command.to_ascii_uppercase().as_str() {
                "INCR" => {
                    arity(2)?;
                    1
                }
                "DECR" => {
                    arity(2)?;
                    -1
                }
                "INCRBY" => {
                    arity(3)?;
                    integer_of(&args[2])?
                }
                _ => {
                    arity(3)?;
                    integer_of(&args[2])?
                        .checked_neg()
                        .ok_or_else(|| error("ERR decrement would overflow"))?
                }
            };
            let current = match keys.get(&args[1]) {
                Some(Entry::Text(v)) => integer_of(v)?,
                Some(Entry::Hash(_)) => return Err(error(WRONG_TYPE)),
                None => 0,
            };
            let next = current
                .checked_add(by)
                .ok_or_else(|| error("ERR increment or decrement would overflow"))?;
            keys.insert(args[1].clone(), Entry::Text(next.to_string()));
            int(next)
        }
        "HGET" => {
            arity(3)?;
            match keys.get(&args[1]) {
                Some(Entry::Hash(h)) => h
                    .get(&args[2])
                    .map_or(Ok(Value::Boolean(false)), |v| text(v)),
                Some(Entry::Text(_)) => Err(error(WRONG_TYPE)),
                None => Ok(Value::Boolean(false)),
            }
        }
        "HMGET" => {
            arity(3)?;
            let hash = match keys.get(&args[1]) {
                Some(Entry::Hash(h)) => Some(h),
                Some(Entry::Text(_)) => return Err(error(WRONG_TYPE)),
                None => None,
            };
            // A missing field is nil in the reply: `false` in Lua.
            let table = lua.create_table_with_capacity(args.len() - 2, 0)?;
            for (i, field) in args[2..].iter().enumerate() {
                match hash.and_then(|h| h.get(field)) {
                    Some(value) => table.raw_set(i + 1, value.as_str())?,
                    None => table.raw_set(i + 1, false)?,
                }
            }
            Ok(Value::Table(table))
        }
        "HSET" => {
            if args.len() < 4 || !args.len().is_multiple_of(2) {
                return Err(error("ERR wrong number of arguments for 'hset' command"));
            }
            let entry = keys
                .entry(args[1].clone())
                .or_insert_with(|| Entry::Hash(HashMap::new()));
            let Entry::Hash(hash) = entry else {
                return Err(error(WRONG_TYPE));
            };
            let added = args[2..]
                .chunks(2)
                .filter(|pair| hash.insert(pair[0].clone(), pair[1].clone()).is_none())
                .count();
            int(added as i64)
        }
        "HDEL" => {
            arity(3)?;
            let (removed, now_empty) = match keys.get_mut(&args[1]) {
                Some(Entry::Hash(hash)) => {
                    let removed = args[2..]
                        .iter()
                        .filter(|f| hash.remove(*f).is_some())
                        .count();
                    (removed, hash.is_empty())
                }
                Some(Entry::Text(_)) => return Err(error(WRONG_TYPE)),
                None => (0, false),
            };
            // Redis deletes a hash when its last field goes.
            if now_empty {
                keys.remove(&args[1]);
            }
            int(removed as i64)
        }
        "HGETALL" => {
            arity(2)?;
            match keys.get(&args[1]) {
                Some(Entry::Hash(h)) => {
                    // Redis's order is unspecified; sorted keeps replies stable.
                    let mut pairs: Vec<(&String, &String)> = h.iter().collect();
                    pairs.sort_unstable();
                    let table = lua.create_table()?;
                    for (i, (field, value)) in pairs.into_iter().enumerate() {
                        table.raw_set(2 * i + 1, field.as_str())?;
                        table.raw_set(2 * i + 2, value.as_str())?;
                    }
                    Ok(Value::Table(table))
                }
                Some(Entry::Text(_)) => Err(error(WRONG_TYPE)),
                None => Ok(Value::Table(lua.create_table()?)),
            }
        }
        "HLEN" => {
            arity(2)?;
            match keys.get(&args[1]) {
                Some(Entry::Hash(h)) => int(h.len() as i64),
                Some(Entry::Text(_)) => Err(error(WRONG_TYPE)),
                None => int(0),
            }
        }
        "PUBLISH" => {
            arity(3)?;
            let receivers = published
                .send((args[1].clone(), args[2].clone()))
                .unwrap_or(0);
            int(receivers as i64)
        }
        other => Err(error(&format!(
            "ERR unknown command '{other}' (the embedded store implements only what the scripts use)"
        ))),
    }
}

/// Converts a script's return value the way Redis does.
fn to_reply(value: &Value) -> mlua::Result<Reply> {
    Ok(match value {
        Value::Nil | Value::Boolean(false) => Reply::Nil,
        Value::Boolean(true) => Reply::Int(1),
        Value::Integer(i) => Reply::Int(*i),
        // Redis truncates Lua numbers to integers.
        Value::Number(n) => Reply::Int(*n as i64),
        Value::String(s) => Reply::Bulk(s.to_string_lossy()),
        Value::Table(table) => {
            if let Ok(Value::String(status)) = table.raw_get::<Value>("ok") {
                return Ok(Reply::Status(status.to_string_lossy()));
            }
            if let Ok(Value::String(err)) = table.raw_get::<Value>("err") {
                return Err(mlua::Error::RuntimeError(err.to_string_lossy()));
            }
            // An array up to the first nil.
            let mut items = Vec::new();
            for i in 1.. {
                let item: Value = table.raw_get(i)?;
                if item.is_nil() {
                    break;
                }
                items.push(to_reply(&item)?);
            }
            Reply::Array(items)
        }
        _ => Reply::Nil,
    })
}
