//! The Lua scripts, compiled into the binary from `lua/`. One source of
//! truth: Redis runs these files through EVALSHA, the embedded store runs
//! the very same text.

/// A named Lua script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LuaScript {
    /// Short name, for errors and metrics.
    pub name: &'static str,
    /// The Lua source.
    pub source: &'static str,
}

/// One purchase decision (see `lua/reserve.lua`).
pub const RESERVE: LuaScript = LuaScript {
    name: "reserve",
    source: include_str!("../../lua/reserve.lua"),
};
/// The decisions of a batch of purchases of one item, in order (see
/// `lua/reserve_batch.lua`).
pub const RESERVE_BATCH: LuaScript = LuaScript {
    name: "reserve_batch",
    source: include_str!("../../lua/reserve_batch.lua"),
};
/// Give a reservation back (see `lua/release.lua`).
pub const RELEASE: LuaScript = LuaScript {
    name: "release",
    source: include_str!("../../lua/release.lua"),
};
/// Load an item's stock (see `lua/prewarm.lua`).
pub const PREWARM: LuaScript = LuaScript {
    name: "prewarm",
    source: include_str!("../../lua/prewarm.lua"),
};
/// Add stock (see `lua/restock.lua`).
pub const RESTOCK: LuaScript = LuaScript {
    name: "restock",
    source: include_str!("../../lua/restock.lua"),
};
/// Read an item's state (see `lua/status.lua`).
pub const STATUS: LuaScript = LuaScript {
    name: "status",
    source: include_str!("../../lua/status.lua"),
};

/// Which order a user holds (see `lua/holder.lua`).
pub const HOLDER: LuaScript = LuaScript {
    name: "holder",
    source: include_str!("../../lua/holder.lua"),
};

/// Every reservation of an item (see `lua/buyers.lua`).
pub const BUYERS: LuaScript = LuaScript {
    name: "buyers",
    source: include_str!("../../lua/buyers.lua"),
};

/// Every script, for loading up front.
pub(crate) const ALL: [LuaScript; 8] = [
    RESERVE,
    RESERVE_BATCH,
    RELEASE,
    PREWARM,
    RESTOCK,
    STATUS,
    HOLDER,
    BUYERS,
];
