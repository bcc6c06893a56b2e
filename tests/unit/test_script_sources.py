"""How scripts are assembled: each carries only the statements of _lib.lua it needs."""

from __future__ import annotations

from jobs.queue._scripts import needed_lib, scripts

LIB = """-- header: the key schema
-- more header

local LIMIT = 10

local function unused(x)
  return x
end

local function helper(x)
  return x + LIMIT
end

-- a comment naming unused() does not keep it
local function used(x)
  return helper(x)  -- unused here neither
end
local later
local function early()
  return later()
end
later = function()
  return 1
end
"""


def test_only_what_the_script_reaches_is_kept_in_order() -> None:
    kept = needed_lib(LIB, "return used(1)")
    assert kept.startswith("-- header: the key schema\n-- more header\n")
    assert "local LIMIT = 10" in kept
    assert kept.index("LIMIT") < kept.index("function helper") < kept.index("function used")
    assert "function unused" not in kept
    assert "local later" not in kept and "function early" not in kept


def test_a_function_declared_ahead_keeps_both_its_statements() -> None:
    kept = needed_lib(LIB, "return early()")
    assert "local later\n" in kept
    assert "later = function()" in kept
    assert kept.index("local later") < kept.index("function early") < kept.index("later = function")


def test_naming_everything_keeps_everything_and_every_script_keeps_the_header() -> None:
    lib_size = len(needed_lib(LIB, "LIMIT used unused early later"))
    assert lib_size == len(LIB)
    for script in scripts().all():
        assert "_lib.lua: helpers shared by every script" in script.source
        assert "local function now_ms()" in script.source or "now_ms" not in script.source
