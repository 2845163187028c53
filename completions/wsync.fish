# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_wsync_global_optspecs
    string join \n h/help V/version
end

function __fish_wsync_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_wsync_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_wsync_using_subcommand
    set -l cmd (__fish_wsync_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c wsync -n "__fish_wsync_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wsync -n "__fish_wsync_needs_command" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "add" -d 'Register a directory as a workspace'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "remove" -d 'Unregister a workspace and stop mirroring it (nothing is deleted anywhere)'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "attach" -d 'Add a remote to a workspace'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "detach" -d 'Remove a remote from a workspace (the remote\'s files stay)'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "list" -d 'List workspaces and their remotes'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "status" -d 'Show the sync state of every workspace and remote (problems first)'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "events" -d 'Print the daemon\'s events as they happen (syncs, state changes, errors, halts)'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "client" -d 'Relay the daemon socket over stdin/stdout (for editors that cannot open a unix socket)'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "pause" -d 'Stop pushing changes for a workspace (persisted; changes are still collected)'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "resume" -d 'Resume pushing changes; also lifts a safety halt'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "restart" -d 'Restart a workspace\'s monitor and clear a `failed` state'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "flush" -d 'Wait until every remote holds every change made before this command'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "set" -d 'Change a workspace\'s settings (excludes, watch mode, tunables, a remote\'s transport)'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "up" -d 'Register the workspace of a `.wsync.toml` and attach its remotes (re-run to apply edits)'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "down" -d 'Unregister the workspace of a `.wsync.toml` (nothing is deleted anywhere)'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "init" -d 'Write a commented starter `.wsync.toml` into DIR (default: the current directory)'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "logs" -d 'Print or follow the daemon\'s log, or a workspace monitor\'s'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "verify" -d 'Compare a workspace with its remotes by content and list any drift (changes nothing)'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "trash" -d 'List or restore what remotes kept of deleted and overwritten files (`--keep-deleted`)'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "check-ignore" -d 'Say whether paths are excluded from syncing, and by which rule'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "config" -d 'Show the paths the config in effect resolves: config file, registry, socket, logs, ...'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "daemon" -d 'Start, stop or inspect the daemon wsyncd'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "generate-docs" -d 'Write the completion scripts and man pages into DIR/completions and DIR/man'
complete -c wsync -n "__fish_wsync_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wsync -n "__fish_wsync_using_subcommand add" -l name -d 'The workspace\'s name (letters, digits and . _ - + @)' -r
complete -c wsync -n "__fish_wsync_using_subcommand add" -l exclude -d 'A gitignore-style pattern to leave out (repeatable)' -r
complete -c wsync -n "__fish_wsync_using_subcommand add" -l watch-mode -d 'How the monitor learns of changes: auto (inotify; poll on network and FUSE filesystems), inotify, notify or poll (default: the config\'s WatchMode)' -r -f -a "auto\t''
inotify\t''
notify\t''
poll\t''"
complete -c wsync -n "__fish_wsync_using_subcommand add" -l poll-interval-ms -d 'How often the poll backend walks the tree, in milliseconds (default: the config\'s)' -r
complete -c wsync -n "__fish_wsync_using_subcommand add" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand add" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand remove" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand remove" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand attach" -l name -d 'The remote\'s name within the workspace' -r
complete -c wsync -n "__fish_wsync_using_subcommand attach" -l port -d 'SSH port' -r
complete -c wsync -n "__fish_wsync_using_subcommand attach" -l identity-file -d 'SSH private key to use' -r -F
complete -c wsync -n "__fish_wsync_using_subcommand attach" -l ssh-option -d 'An ssh `-o KEY=VALUE` option (repeatable)' -r
complete -c wsync -n "__fish_wsync_using_subcommand attach" -l keep-deleted -d 'Keep what syncs delete or overwrite on the remote for DAYS days, in `.wsync-trash` there (`wsync trash`); 0 keeps nothing (the default). On a target already attached, changes that remote\'s setting' -r
complete -c wsync -n "__fish_wsync_using_subcommand attach" -l transport -d 'How small changes reach the remote: `auto` (wsync\'s executor — in process for a local target, its agent over SSH, installed on first use — with rsync for the rest) or `rsync` (rsync for everything, the old path)' -r
complete -c wsync -n "__fish_wsync_using_subcommand attach" -l rsync-path -d 'For an SSH remote: the rsync it runs (an absolute path, e.g. /opt/homebrew/bin/rsync), instead of `rsync` on its PATH. wsync needs rsync 3.1.3 or later on both ends' -r
complete -c wsync -n "__fish_wsync_using_subcommand attach" -l timeout -d 'Seconds to wait for the initial sync' -r
complete -c wsync -n "__fish_wsync_using_subcommand attach" -l no-wait -d 'Return once the daemon accepted the remote, without waiting for the initial sync'
complete -c wsync -n "__fish_wsync_using_subcommand attach" -l overwrite -d 'Make a non-empty target that holds no `.wsync-target` marker the mirror anyway: what the workspace lacks is deleted there, what differs is overwritten (attach without it prints a preview first)'
complete -c wsync -n "__fish_wsync_using_subcommand attach" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand attach" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand detach" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand detach" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand list" -l json -d 'Print JSON instead of a table'
complete -c wsync -n "__fish_wsync_using_subcommand list" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand list" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand status" -l all -d 'Every workspace, even inside one'
complete -c wsync -n "__fish_wsync_using_subcommand status" -l json -d 'Print JSON instead of a table'
complete -c wsync -n "__fish_wsync_using_subcommand status" -l watch -d 'Keep refreshing until interrupted'
complete -c wsync -n "__fish_wsync_using_subcommand status" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand status" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand events" -l all -d 'Every workspace, even inside one'
complete -c wsync -n "__fish_wsync_using_subcommand events" -l json -d 'One JSON object per event and line'
complete -c wsync -n "__fish_wsync_using_subcommand events" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand events" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand client" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand client" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand pause" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand pause" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand resume" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand resume" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand restart" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand restart" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand flush" -l timeout -d 'Seconds to wait' -r
complete -c wsync -n "__fish_wsync_using_subcommand flush" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand flush" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand set" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand set" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand up" -l overwrite -d 'Attach non-empty targets holding no `.wsync-target` marker anyway (as `attach --overwrite`)'
complete -c wsync -n "__fish_wsync_using_subcommand up" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand up" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand down" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand down" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand init" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand init" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand logs" -s n -l lines -d 'How many of the last lines to print first' -r
complete -c wsync -n "__fish_wsync_using_subcommand logs" -s f -l follow -d 'Keep printing new lines (follows daily rotation) until Ctrl-C'
complete -c wsync -n "__fish_wsync_using_subcommand logs" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand logs" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand verify" -l timeout -d 'With --repair: seconds to wait for the checksum resync' -r
complete -c wsync -n "__fish_wsync_using_subcommand verify" -l json -d 'Print JSON instead of text'
complete -c wsync -n "__fish_wsync_using_subcommand verify" -l attributes -d 'Also list entries whose content matches but whose times or permissions differ'
complete -c wsync -n "__fish_wsync_using_subcommand verify" -l repair -d 'Fix the drift found: the monitor runs a full sync comparing every file by checksum (through the same protect rules, target marker and deletion budget as every sync), then the comparison runs again and reports what was fixed'
complete -c wsync -n "__fish_wsync_using_subcommand verify" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand verify" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand trash; and not __fish_seen_subcommand_from list restore help" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand trash; and not __fish_seen_subcommand_from list restore help" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand trash; and not __fish_seen_subcommand_from list restore help" -f -a "list" -d 'List the snapshots in each remote\'s .wsync-trash: name (UTC start time), files, bytes'
complete -c wsync -n "__fish_wsync_using_subcommand trash; and not __fish_seen_subcommand_from list restore help" -f -a "restore" -d 'Copy a snapshot, or some paths of it, back into the workspace (the remote gets them by sync)'
complete -c wsync -n "__fish_wsync_using_subcommand trash; and not __fish_seen_subcommand_from list restore help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wsync -n "__fish_wsync_using_subcommand trash; and __fish_seen_subcommand_from list" -l remote -d 'Only this remote (see `wsync list`)' -r
complete -c wsync -n "__fish_wsync_using_subcommand trash; and __fish_seen_subcommand_from list" -l json -d 'Print JSON instead of text'
complete -c wsync -n "__fish_wsync_using_subcommand trash; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand trash; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand trash; and __fish_seen_subcommand_from restore" -l remote -d 'The remote whose trash to restore from (needed when the workspace has several)' -r
complete -c wsync -n "__fish_wsync_using_subcommand trash; and __fish_seen_subcommand_from restore" -l force -d 'Overwrite paths that exist in the workspace'
complete -c wsync -n "__fish_wsync_using_subcommand trash; and __fish_seen_subcommand_from restore" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand trash; and __fish_seen_subcommand_from restore" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand trash; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the snapshots in each remote\'s .wsync-trash: name (UTC start time), files, bytes'
complete -c wsync -n "__fish_wsync_using_subcommand trash; and __fish_seen_subcommand_from help" -f -a "restore" -d 'Copy a snapshot, or some paths of it, back into the workspace (the remote gets them by sync)'
complete -c wsync -n "__fish_wsync_using_subcommand trash; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wsync -n "__fish_wsync_using_subcommand check-ignore" -l json -d 'Print JSON instead of text'
complete -c wsync -n "__fish_wsync_using_subcommand check-ignore" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand check-ignore" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand config" -l path -d 'Print only this path (nothing when it is unset)' -r -f -a "config_file\t'The config file in use'
registry\t'WorkspaceConfigFilePath: the registry of workspaces'
socket\t'DaemonCommandSocketPath: the daemon\'s command socket'
pid_file\t'The daemon\'s pid file (the socket path with .pid appended)'
runtime_directory\t'The directory holding the socket and pid file'
log_directory\t'LogDirectory: the daemon\'s and monitors\' logs'
monitor_executable\t'MonitorExecutablePath, when set'
hook_command\t'HookCommand, when set'"
complete -c wsync -n "__fish_wsync_using_subcommand config" -l paths -d 'List every resolved path'
complete -c wsync -n "__fish_wsync_using_subcommand config" -l json -d 'Print JSON instead of text (with --paths)'
complete -c wsync -n "__fish_wsync_using_subcommand config" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c wsync -n "__fish_wsync_using_subcommand config" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand completions" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand completions" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status help" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status help" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status help" -f -a "start" -d 'Start wsyncd in the background; returns once it answers on its socket'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status help" -f -a "stop" -d 'Stop wsyncd gracefully and wait until it is gone'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status help" -f -a "status" -d 'Show whether wsyncd runs: pid, version, uptime, socket, registry (exit 3 if not)'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and not __fish_seen_subcommand_from start stop status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and __fish_seen_subcommand_from start" -l timeout -d 'Seconds to wait for the daemon to answer' -r
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and __fish_seen_subcommand_from start" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and __fish_seen_subcommand_from start" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and __fish_seen_subcommand_from stop" -l timeout -d 'Seconds to wait for the daemon to exit' -r
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and __fish_seen_subcommand_from stop" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and __fish_seen_subcommand_from stop" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and __fish_seen_subcommand_from status" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "start" -d 'Start wsyncd in the background; returns once it answers on its socket'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "stop" -d 'Stop wsyncd gracefully and wait until it is gone'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show whether wsyncd runs: pid, version, uptime, socket, registry (exit 3 if not)'
complete -c wsync -n "__fish_wsync_using_subcommand daemon; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wsync -n "__fish_wsync_using_subcommand generate-docs" -s h -l help -d 'Print help'
complete -c wsync -n "__fish_wsync_using_subcommand generate-docs" -s V -l version -d 'Print version'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "add" -d 'Register a directory as a workspace'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "remove" -d 'Unregister a workspace and stop mirroring it (nothing is deleted anywhere)'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "attach" -d 'Add a remote to a workspace'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "detach" -d 'Remove a remote from a workspace (the remote\'s files stay)'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "list" -d 'List workspaces and their remotes'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "status" -d 'Show the sync state of every workspace and remote (problems first)'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "events" -d 'Print the daemon\'s events as they happen (syncs, state changes, errors, halts)'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "client" -d 'Relay the daemon socket over stdin/stdout (for editors that cannot open a unix socket)'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "pause" -d 'Stop pushing changes for a workspace (persisted; changes are still collected)'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "resume" -d 'Resume pushing changes; also lifts a safety halt'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "restart" -d 'Restart a workspace\'s monitor and clear a `failed` state'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "flush" -d 'Wait until every remote holds every change made before this command'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "set" -d 'Change a workspace\'s settings (excludes, watch mode, tunables, a remote\'s transport)'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "up" -d 'Register the workspace of a `.wsync.toml` and attach its remotes (re-run to apply edits)'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "down" -d 'Unregister the workspace of a `.wsync.toml` (nothing is deleted anywhere)'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "init" -d 'Write a commented starter `.wsync.toml` into DIR (default: the current directory)'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "logs" -d 'Print or follow the daemon\'s log, or a workspace monitor\'s'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "verify" -d 'Compare a workspace with its remotes by content and list any drift (changes nothing)'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "trash" -d 'List or restore what remotes kept of deleted and overwritten files (`--keep-deleted`)'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "check-ignore" -d 'Say whether paths are excluded from syncing, and by which rule'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "config" -d 'Show the paths the config in effect resolves: config file, registry, socket, logs, ...'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "completions" -d 'Print a shell completion script'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "daemon" -d 'Start, stop or inspect the daemon wsyncd'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "generate-docs" -d 'Write the completion scripts and man pages into DIR/completions and DIR/man'
complete -c wsync -n "__fish_wsync_using_subcommand help; and not __fish_seen_subcommand_from add remove attach detach list status events client pause resume restart flush set up down init logs verify trash check-ignore config completions daemon generate-docs help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c wsync -n "__fish_wsync_using_subcommand help; and __fish_seen_subcommand_from trash" -f -a "list" -d 'List the snapshots in each remote\'s .wsync-trash: name (UTC start time), files, bytes'
complete -c wsync -n "__fish_wsync_using_subcommand help; and __fish_seen_subcommand_from trash" -f -a "restore" -d 'Copy a snapshot, or some paths of it, back into the workspace (the remote gets them by sync)'
complete -c wsync -n "__fish_wsync_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "start" -d 'Start wsyncd in the background; returns once it answers on its socket'
complete -c wsync -n "__fish_wsync_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "stop" -d 'Stop wsyncd gracefully and wait until it is gone'
complete -c wsync -n "__fish_wsync_using_subcommand help; and __fish_seen_subcommand_from daemon" -f -a "status" -d 'Show whether wsyncd runs: pid, version, uptime, socket, registry (exit 3 if not)'
