-- Runs health.lua on one object the way Argo CD does (the object in the global `obj`)
-- and prints "<status>\t<message>". Used by tests/e2e_gitops.rs on live objects.
-- Usage: lua5.4 hack/health/run.lua FILE|-
local dir = arg[0]:match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local json = require("json")

local function read(path)
  local f = assert(io.open(path, "r"))
  local s = f:read("a")
  f:close()
  return s
end

local input = arg[1]
local text = (input == nil or input == "-") and io.read("a") or read(input)
local env = setmetatable({ obj = json.decode(text) }, { __index = _G })
local fn = assert(load(read(dir .. "/health.lua"), "health.lua", "t", env))
local ok, hs = pcall(fn)
if not ok then
  io.stderr:write("run.lua: health.lua failed: " .. tostring(hs) .. "\n")
  os.exit(2)
end
if type(hs) ~= "table" or type(hs.status) ~= "string" then
  io.stderr:write("run.lua: health.lua returned no status\n")
  os.exit(2)
end
print(hs.status .. "\t" .. tostring(hs.message))
