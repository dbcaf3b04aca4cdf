-- Included, not run alone: the settle scripts (`-- include: webhook_delivery_store.lua`) get this function.
--
-- store_webhook_delivery(delivery_key, delayed_key, webhook, now_ms)
--   Writes a finished job's webhook delivery in the same step that settles the job, so a worker that dies right
--   after settling cannot lose it. `webhook` is '' (no webhook) or JSON {"fields": [field, value, ...],
--   "ttl_ms": n, "safety_net_ms": n, "member": "delivery_id:1"}: the delivery hash is stored unless it exists,
--   and a safety-net entry goes in the webhook delay queue, removed when the first attempt is sent.
local function store_webhook_delivery(delivery_key, delayed_key, webhook, now_ms)
  if webhook == '' or redis.call('EXISTS', delivery_key) == 1 then return end
  local spec = cjson.decode(webhook)
  redis.call('HSET', delivery_key, 'created_at_ms', now_ms, unpack(spec.fields))
  redis.call('PEXPIRE', delivery_key, spec.ttl_ms)
  redis.call('ZADD', delayed_key, now_ms + spec.safety_net_ms, spec.member)
end
