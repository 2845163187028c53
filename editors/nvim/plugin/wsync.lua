-- Loaded at startup: nothing runs until require("wsync").setup() is called (see README).
if vim.g.loaded_wsync then
  return
end
vim.g.loaded_wsync = true
