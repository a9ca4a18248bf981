-- reap one instance now (clean stop, or before a resync): ARGV instance, now ms.
return reap(ARGV[1], tonumber(ARGV[2]))
