-- Runs health.lua the way Argo CD does (the object in the global `obj`) against every
-- fixture listed in expected.tsv and compares the health status.
-- Usage: lua5.4 hack/health/test.lua   (from anywhere)
local dir = arg[0]:match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local json = require("json")

local function read(path)
  local f = assert(io.open(path, "r"))
  local s = f:read("a")
  f:close()
  return s
end

local chunk = read(dir .. "/health.lua")
local passed, failed = 0, 0
for line in io.lines(dir .. "/expected.tsv") do
  local name, want = line:match("^([^#\t][^\t]*)\t([^\t]+)\t")
  if name then
    local obj = json.decode(read(dir .. "/fixtures/" .. name .. ".json"))
    -- A fresh environment per object, like Argo CD's per-call Lua state.
    local env = setmetatable({ obj = obj }, { __index = _G })
    local fn = assert(load(chunk, "health.lua", "t", env))
    local ok, hs = pcall(fn)
    if not ok then
      failed = failed + 1
      print(string.format("FAIL %s: script error: %s", name, hs))
    elseif type(hs) ~= "table" or hs.status ~= want or type(hs.message) ~= "string" or hs.message == "" then
      failed = failed + 1
      print(string.format("FAIL %s: want %s, got %s (%s)", name, want, tostring(hs and hs.status), tostring(hs and hs.message)))
    else
      passed = passed + 1
      print(string.format("ok   %-30s %-12s %s", name, hs.status, hs.message))
    end
  end
end
print(string.format("health: %d passed, %d failed", passed, failed))
os.exit(failed == 0 and passed > 0 and 0 or 1)
