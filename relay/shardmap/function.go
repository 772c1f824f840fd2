package shardmap

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// PublishFunction is the Redis Function a relay publishes with (FCALL): it stores and announces
// one message atomically on the shard's slot. The operator loads PublishLibrary on every master
// (FUNCTION LOAD REPLACE; functions reach replicas by replication and survive restarts in the
// AOF) and grants channel users FCALL instead of EVAL and SCRIPT, so a relay's credentials
// cannot run arbitrary Lua. Redis checks the commands a function calls against the caller's
// ACL too, so the user still holds XADD, XTRIM, SET, GET and SPUBLISH on its own keys.
//
// keys[1] the stream (Durable) or the live channel (Live: only there to route the call to the
// slot), keys[2] the idempotency key if the publisher sent one (scoped by the caller: the same
// header from two callers names two keys).
// args: 1 live channel, 2 "1" if Durable, 3 MAXLEN ("0" = none), 4 maxAge in milliseconds
// ("0" = none: the MINID trimmed to is computed from the master's own clock, TIME, so a relay
// whose clock runs ahead cannot trim fresh entries),
// 5 idempotency window in seconds, 6 key, 7 type, 8 content type, 9 data, 10 ID for Live,
// 11 a hash of the message, stored with its ID under the idempotency key: a retry with the same
// key and another message is a conflict ({id, 2}), not a duplicate ({id, 1}), 12 the producer's
// CloudEvents attributes (event.Attrs.String(); "" = none, and then no field is stored),
// 13 the per-key history depth ("0" = none), 14 the history index's lifetime in seconds.
// With a history depth the last key (keys[2] without an idempotency key, else keys[3]) is the
// message key's history index (HistoryKey): a list of its newest stream IDs, newest first,
// capped at the depth, so the last N events of one key are found without reading the stream.
//
// TIME, like the commands above, must be in the caller's ACL (RelayCommands).
//
// XADD first, SPUBLISH second: functions do not roll back, and "stored but not announced" is
// repaired by catch-up while the reverse would announce what was never stored. The payload is
// "<id>\n<writer>\n<key>\n<type>\n<content type>\n<attributes>\n<data>" (event.DecodeLive), where writer is
// the first 12 characters of the node ID that ran the function: a master that was paused, lost
// its slot and wakes up still runs queued calls and its SPUBLISH reaches the new master over
// the cluster bus; the subscription drops messages not written by the node it subscribed on,
// because such entries are lost when the stale master rejoins. The idempotency key is written
// right after XADD, before anything that could still fail (a trim, the announcement), so a
// retry can never store the message twice. A retry rewrites the idempotency key unchanged: WAIT
// counts the replication of the caller's own writes, and this write comes after the original
// entry in the master's replication stream, so ?ack=replicated on a retry waits for it too.
var PublishFunction = "herald_publish_" + publishVersion()

// PublishLibraryName is the name PublishLibrary declares (FUNCTION LIST LIBRARYNAME): each
// version of the code is a library of its own, so the operator of a new version loads it beside
// the old one, and the relays of both versions publish while they roll. (Versions before this
// naming called their library "herald".)
var PublishLibraryName = LibraryPrefix + publishVersion()

// LibraryPrefix starts the name of every Herald function library.
const LibraryPrefix = "herald_"

// LegacyLibraryName is the one library name of versions before PublishLibraryName: each of them
// replaced the previous one's code under it.
const LegacyLibraryName = "herald"

// PublishLibrary is the source of the library that holds PublishFunction. The function's name
// carries a digest of its code, so a relay never calls a function that means something else
// than the one it was built with: where the operator has not loaded this code yet, the call
// fails ("Function not found") instead.
var PublishLibrary = strings.NewReplacer("{library}", PublishLibraryName, "{function}", PublishFunction).Replace(libraryTemplate)

// libraryTemplate is the whole library but its names, which are its digest: a change anywhere
// in it (the code, how it is registered) makes a version of its own.
const libraryTemplate = "#!lua name={library}\n" +
	"-- Herald's Redis Function library (FUNCTION LOAD by the operator on every master).\n" +
	"redis.register_function('{function}', function(keys, args)\n" + publishBody + "end)\n"

func publishVersion() string {
	sum := sha256.Sum256([]byte(libraryTemplate))
	return hex.EncodeToString(sum[:4])
}

// publishBody is PublishFunction's code.
const publishBody = `  local depth = tonumber(args[13] or '0')
  local idem = nil
  if #keys == 3 or (#keys == 2 and depth == 0) then idem = keys[2] end
  if idem then
    local prev = redis.call('GET', idem)
    if prev then
      local sep = string.find(prev, ' ', 1, true)
      local prevID, prevHash = prev, nil
      if sep then prevID, prevHash = string.sub(prev, 1, sep - 1), string.sub(prev, sep + 1) end
      if prevHash and prevHash ~= args[11] then return {prevID, 2} end
      -- A write of this call, so that WAIT after a retry covers the original entry too.
      redis.call('SET', idem, prev, 'KEEPTTL')
      return {prevID, 1}
    end
  end
  local id = args[10]
  local durable = args[2] == '1'
  local minid = '0'
  if durable and args[4] ~= '0' then
    local now = redis.call('TIME')
    minid = string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(args[4]))
  end
  if durable then
    local f = {'k', args[6], 't', args[7], 'c', args[8], 'd', args[9]}
    if args[12] ~= '' then f[9] = 'a'; f[10] = args[12] end
    if args[3] ~= '0' then
      id = redis.call('XADD', keys[1], 'MAXLEN', '~', args[3], '*', unpack(f))
    elseif minid ~= '0' then
      id = redis.call('XADD', keys[1], 'MINID', '~', minid, '*', unpack(f))
    else
      id = redis.call('XADD', keys[1], '*', unpack(f))
    end
  end
  -- Remember the ID at once: if anything below fails, a retry finds it instead of storing again.
  if idem then redis.call('SET', idem, id .. ' ' .. args[11], 'EX', args[5]) end
  if durable and depth > 0 then
    local index = keys[#keys]
    redis.call('LPUSH', index, id)
    redis.call('LTRIM', index, 0, depth - 1)
    if args[14] ~= '0' then redis.call('EXPIRE', index, args[14]) end
  end
  if durable and args[3] ~= '0' and minid ~= '0' then redis.call('XTRIM', keys[1], 'MINID', '~', minid) end
  local writer = string.sub(redis.call('CLUSTER', 'MYID'), 1, 12)
  redis.call('SPUBLISH', args[1], id .. '\n' .. writer .. '\n' .. args[6] .. '\n' .. args[7] .. '\n' .. args[8] .. '\n' .. args[12] .. '\n' .. args[9])
  return {id, 0}
`
