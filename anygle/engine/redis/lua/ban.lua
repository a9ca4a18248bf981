-- ban: ARGV kind ('users'|'ips'), value, reason, ttl ms (0: for good), instance.
-- A banned user connected to another instance is kicked through that instance's inbox.
set_ban(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5])
return 1
