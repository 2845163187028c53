-- Driven by tests/e2e/editor_nvim.rs in `nvim --headless`: the plugin against a real daemon.
-- Environment: WSYNC_PLUGIN (editors/nvim), WSYNC_BIN, WSYNC_FILE (a file in a paused
-- workspace), WSYNC_WORKSPACE, WSYNC_MIRROR, WSYNC_RESULT (where the outcome is written).
local env = function(name)
  local value = os.getenv(name)
  assert(value, name)
  return value
end
vim.opt.rtp:prepend(env("WSYNC_PLUGIN"))
local result = env("WSYNC_RESULT")
local bin, ws = env("WSYNC_BIN"), env("WSYNC_WORKSPACE")

local history, notes = {}, {}
local finished = false
local function finish(outcome)
  -- The first outcome stands: code running after a failure must not overwrite it.
  if finished then
    return
  end
  finished = true
  local f = assert(io.open(result, "w"))
  f:write(outcome, "\n", "history: ", table.concat(history, " | "), "\n", "notes: ",
    table.concat(notes, " | "), "\n")
  f:close()
  vim.cmd("qall!")
end
local function wait(what, pred)
  if not vim.wait(20000, pred, 20) then
    finish("FAIL waiting for " .. what)
    error("stopped: " .. what)
  end
end

local function main()
  vim.notify = function(message)
    table.insert(notes, message)
  end
  local wsync = require("wsync")
  vim.api.nvim_create_autocmd("User", {
    pattern = "WsyncChanged",
    callback = function()
      local now = wsync.statusline()
      if history[#history] ~= now then
        table.insert(history, now)
      end
    end,
  })
  wsync.setup({ cmd = { bin, "client" }, reconnect_ms = 0 })
  vim.cmd("edit " .. vim.fn.fnameescape(env("WSYNC_FILE")))
  wait("the paused workspace", function()
    return wsync.statusline() == "wsync: paused"
  end)
  if wsync.workspace() ~= ws then
    finish("FAIL the buffer's workspace is " .. tostring(wsync.workspace()))
  end

  -- The change waits while paused: the component shows it pending.
  vim.api.nvim_buf_set_lines(0, 0, -1, false, { "changed in nvim" })
  vim.cmd("write")
  wait("pending", function()
    return wsync.statusline() == "wsync: pending 1"
  end)
  vim.fn.system({ bin, "resume", ws })
  wait("in sync after the resume", function()
    return wsync.statusline() == "wsync: in sync"
  end)

  -- :WsyncFlush answers through the same connection.
  vim.cmd("WsyncFlush")
  wait("the flush", function()
    return notes[#notes] == "wsync: " .. ws .. " is in sync"
  end)
  vim.cmd("WsyncStatus")
  wait(":WsyncStatus", function()
    return (notes[#notes] or ""):find("mirror: in%-sync, 0 pending") ~= nil
  end)

  -- The mirror replaced by a file: the remote fails, and the user is told.
  vim.fn.delete(env("WSYNC_MIRROR"), "rf")
  local f = assert(io.open(env("WSYNC_MIRROR"), "w"))
  f:write("not a directory")
  f:close()
  vim.api.nvim_buf_set_lines(0, 0, -1, false, { "changed again" })
  vim.cmd("write")
  wait("a notification of the error", function()
    for _, note in ipairs(notes) do
      if note:find("/mirror is error") or note:find("/mirror is halted") or note:find(" halted: ") then
        return true
      end
    end
    return false
  end)
finish("OK")
end

-- A Lua error fails the test with its message instead of leaving nvim running.
local ok, err = pcall(main)
if not ok then
  finish("FAIL " .. tostring(err))
end
