-- wsync for Neovim: a statusline component for the current buffer's workspace, :WsyncStatus,
-- :WsyncFlush, and a notification when a remote of the current workspace enters error or
-- halted. No dependencies: it runs `wsync client` (a stdio bridge to the daemon socket) and
-- speaks the daemon protocol (docs/PROTOCOL.md) over it: hello, status once, then subscribe;
-- from then on the daemon pushes events and the state here follows them.

local M = {}

local PROTOCOL = 2

local defaults = {
  -- The bridge to run; a list, never a shell string.
  cmd = { "wsync", "client" },
  -- Reconnect after this many milliseconds when the daemon goes away (0: never).
  reconnect_ms = 5000,
}

local state = {
  opts = vim.deepcopy(defaults),
  job = nil,
  partial = "",
  -- Callbacks for the answers still due, in request order (the daemon answers in order).
  waiting = {},
  connected = false,
  -- name -> { path, paused, halted, monitor, remotes = { name -> { state, pending } } }
  workspaces = {},
}

local function notify(message, level)
  vim.schedule(function()
    vim.notify("wsync: " .. message, level or vim.log.levels.INFO)
  end)
end

local function changed()
  vim.schedule(function()
    vim.api.nvim_exec_autocmds("User", { pattern = "WsyncChanged", modeline = false })
    vim.cmd("redrawstatus")
  end)
end

local function nonnil(v)
  if v == vim.NIL then
    return nil
  end
  return v
end

local function send(message, on_answer)
  if not state.job then
    if on_answer then
      on_answer({ type = "error", code = "internal", message = "not connected to wsyncd" })
    end
    return
  end
  table.insert(state.waiting, on_answer or false)
  vim.fn.chansend(state.job, vim.json.encode(message) .. "\n")
end

-- The workspace holding `file` (the longest matching root), or nil.
local function workspace_of(file)
  local best, best_len = nil, -1
  for name, ws in pairs(state.workspaces) do
    local root = ws.path
    if root and (file == root or file:sub(1, #root + 1) == root .. "/") and #root > best_len then
      best, best_len = name, #root
    end
  end
  return best
end

local function current_workspace()
  local file = vim.api.nvim_buf_get_name(0)
  if file == "" then
    return nil
  end
  return workspace_of(vim.fn.fnamemodify(file, ":p"))
end

local function from_status(entry)
  local ws = {
    path = entry.workspace.path,
    paused = entry.workspace.paused,
    monitor = entry.monitor and entry.monitor.state,
    remotes = {},
  }
  for _, remote in ipairs(entry.workspace.remotes or {}) do
    ws.remotes[remote.name] = { state = "initial-sync", pending = 0 }
  end
  local report = nonnil(entry.report)
  if report then
    ws.halted = nonnil(report.halted)
    for _, remote in ipairs(report.remotes or {}) do
      ws.remotes[remote.name] = { state = remote.state, pending = remote.pending or 0 }
    end
  end
  return ws
end

local function refresh(on_done)
  send({ type = "status" }, function(answer)
    if answer.type == "status" then
      state.workspaces = {}
      for _, entry in ipairs(answer.workspaces) do
        state.workspaces[entry.workspace.name] = from_status(entry)
      end
      changed()
    end
    if on_done then
      on_done(answer)
    end
  end)
end

local function concerns_current(name)
  return name ~= nil and name == current_workspace()
end

local function on_event(event)
  local name = nonnil(event.workspace)
  local ws = name and state.workspaces[name]
  local kind = event.kind
  if kind == "workspace" then
    -- Registry changes (a remote attached, a workspace added...): read the status again.
    if ws and (event.change == "paused" or event.change == "resumed") then
      ws.paused = event.change == "paused"
    else
      refresh()
    end
  elseif kind == "lagged" or kind == "daemon_stopping" then
    -- The connection ends after these; on_exit reconnects.
    state.connected = false
  elseif not ws then
    return
  elseif kind == "remote_state" then
    ws.remotes[event.remote] = { state = event.state, pending = event.pending or 0 }
    if (event.state == "error" or event.state == "halted") and concerns_current(name) then
      local why = nonnil(event.error)
      notify(
        string.format("%s/%s is %s%s", name, event.remote, event.state, why and (": " .. why) or ""),
        vim.log.levels.ERROR
      )
    end
  elseif kind == "pending" then
    local remote = ws.remotes[event.remote]
    if remote then
      remote.pending = event.pending
    end
  elseif kind == "halted" then
    ws.halted = event.reason
    if concerns_current(name) then
      notify(string.format("%s halted: %s", name, event.reason), vim.log.levels.ERROR)
    end
  elseif kind == "halt_lifted" then
    ws.halted = nil
  elseif kind == "monitor" then
    ws.monitor = event.state
  else
    return
  end
  changed()
end

local function on_line(line)
  if line == "" then
    return
  end
  local ok, message = pcall(vim.json.decode, line)
  if not ok or type(message) ~= "table" then
    return
  end
  if message.type == "event" then
    on_event(message.event)
    return
  end
  local on_answer = table.remove(state.waiting, 1)
  if on_answer then
    on_answer(message)
  end
end

local function on_stdout(_, data)
  -- Neovim splits on newlines: the first item continues the last partial line, the last
  -- item is the start of the next one.
  data[1] = state.partial .. data[1]
  state.partial = table.remove(data)
  for _, line in ipairs(data) do
    on_line(line)
  end
end

local connect

local function on_exit()
  state.job = nil
  state.connected = false
  state.partial = ""
  local waiting = state.waiting
  state.waiting = {}
  for _, on_answer in ipairs(waiting) do
    if on_answer then
      on_answer({ type = "error", code = "internal", message = "the connection to wsyncd ended" })
    end
  end
  changed()
  if state.opts.reconnect_ms > 0 then
    vim.defer_fn(function()
      if not state.job then
        connect()
      end
    end, state.opts.reconnect_ms)
  end
end

connect = function()
  local ok, job = pcall(vim.fn.jobstart, state.opts.cmd, {
    on_stdout = on_stdout,
    on_exit = on_exit,
    stdout_buffered = false,
  })
  if not ok or job <= 0 then
    state.job = nil
    return
  end
  state.job = job
  send({ type = "hello", protocol = PROTOCOL, version = "wsync.nvim" }, function(answer)
    if answer.type ~= "hello" then
      notify(answer.message or "the daemon refused the handshake", vim.log.levels.ERROR)
      return
    end
    refresh(function()
      send({ type = "subscribe" }, function(subscribed)
        state.connected = subscribed.type == "subscribed"
        changed()
      end)
    end)
  end)
end

--- The statusline text for the current buffer's workspace: "wsync: in sync",
--- "wsync: pending N", "wsync: error", "wsync: halted", "wsync: paused"; "" outside a
--- workspace or without a daemon.
function M.statusline()
  if not state.connected then
    return ""
  end
  local name = current_workspace()
  local ws = name and state.workspaces[name]
  if not ws then
    return ""
  end
  if ws.halted then
    return "wsync: halted"
  end
  local pending, busy, any = 0, false, false
  for _, remote in pairs(ws.remotes) do
    any = true
    if remote.state == "halted" then
      return "wsync: halted"
    elseif remote.state == "error" or remote.state == "stalled" then
      return "wsync: error"
    end
    pending = pending + (remote.pending or 0)
    busy = busy or remote.state == "syncing" or remote.state == "initial-sync" or remote.state == "backoff"
  end
  if ws.monitor == "failed" then
    return "wsync: error"
  end
  if pending > 0 or busy then
    return "wsync: pending " .. pending
  end
  if ws.paused then
    return "wsync: paused"
  end
  if not any then
    return "wsync: no remotes"
  end
  return "wsync: in sync"
end

--- The current buffer's workspace name, or nil.
M.workspace = current_workspace

--- :WsyncStatus: every remote of the current workspace (every workspace outside one).
function M.status()
  local name = current_workspace()
  send({ type = "status", workspace = name }, function(answer)
    if answer.type ~= "status" then
      notify(answer.message or "status failed", vim.log.levels.ERROR)
      return
    end
    local lines = {}
    for _, entry in ipairs(answer.workspaces) do
      local ws = from_status(entry)
      local head = entry.workspace.name .. (ws.paused and " (paused)" or "")
      if ws.halted then
        head = head .. " halted: " .. ws.halted
      end
      table.insert(lines, head)
      for remote, r in pairs(ws.remotes) do
        table.insert(lines, string.format("  %s: %s, %d pending", remote, r.state, r.pending))
      end
    end
    notify(#lines > 0 and table.concat(lines, "\n") or "no workspaces")
  end)
end

--- :WsyncFlush: waits until every remote of the current workspace holds every change.
function M.flush()
  local name = current_workspace()
  if not name then
    notify("this buffer is in no workspace", vim.log.levels.WARN)
    return
  end
  send({ type = "flush", workspace = name }, function(answer)
    if answer.type == "flushed" and #answer.lagging == 0 then
      notify(name .. " is in sync")
    elseif answer.type == "flushed" then
      notify(name .. ": still lagging: " .. table.concat(answer.lagging, ", "), vim.log.levels.WARN)
    else
      notify(answer.message or "flush failed", vim.log.levels.ERROR)
    end
  end)
end

function M.setup(opts)
  state.opts = vim.tbl_deep_extend("force", vim.deepcopy(defaults), opts or {})
  vim.api.nvim_create_user_command("WsyncStatus", M.status, { desc = "wsync: show the workspace's remotes" })
  vim.api.nvim_create_user_command("WsyncFlush", M.flush, { desc = "wsync: wait until the remotes are in sync" })
  if not state.job then
    connect()
  end
end

return M
