"""Sessions: rows in the database, as before, read through the cache (Redis).

Every signed-in request read its session row: one query that a request with an API key does
not make (its key is read with its owner in one). Read from the cache, a browser's request
costs no more queries than a key's.

Not Django's cached_db as it is: it fills the cache from whatever it reads in the database, and
"sign out everywhere" (users.services.user_sessions_end, inside the transaction that suspends
an organisation or enrols a second factor) deletes a row that a concurrent request can still
read until that transaction commits; that request would put the ended session back in the
cache, where it would live for the rest of its age. So here:

- the cache is filled only by a write that committed as it returned (one made outside any
  transaction, as the session middleware's are), and only with what was written; a read that
  misses it reads the row and leaves the cache alone (the next write, the idle timeout's, at
  most a minute later, fills it);
- a delete empties the cache at once and again when its transaction commits, and a fill that
  raced a delete finds the row gone and empties it too;
- `exists` asks the database (the live streams' recheck of a socket's session).

So the cache never holds a session the database no longer has, beyond the moment between a
delete's commit and the cache's DEL that follows it.
"""

from contextlib import suppress
from functools import partial

from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.cached_db import SessionStore as CachedDBStore
from django.contrib.sessions.backends.db import SessionStore as DBStore
from django.db import router, transaction


class SessionStore(CachedDBStore):
    def _using(self) -> str:
        return router.db_for_write(self.model)

    def _cache_forget(self, cache_key: str) -> None:
        self._cache.delete(cache_key)

    def _cache_fill(self, session_key: str, data: dict, expiry_seconds: int) -> None:
        cache_key = self.cache_key_prefix + session_key
        self._cache.set(cache_key, data, expiry_seconds)
        if not DBStore.exists(self, session_key):  # deleted while we wrote: take it back
            self._cache_forget(cache_key)

    def load(self):
        try:
            data = self._cache.get(self.cache_key)
        except Exception:  # Redis unreachable (or a key it refuses): the database answers
            data = None
        if data is not None:
            return data
        row = self._get_session_from_db()
        return self.decode(row.session_data) if row else {}

    def save(self, must_create=False):
        if self.session_key is None:
            self.create()  # which saves under a new key, through here
            return
        DBStore.save(self, must_create)
        if transaction.get_connection(self._using()).in_atomic_block:
            return  # not committed yet, and may never be: the next write fills the cache
        with suppress(Exception):  # Redis unreachable: the database still has it
            self._cache_fill(self.session_key, self._session, self.get_expiry_age())

    def exists(self, session_key):
        return DBStore.exists(self, session_key)

    def delete(self, session_key=None):
        session_key = session_key or self.session_key
        if session_key is None:
            return
        DBStore.delete(self, session_key)
        forget = partial(self._cache_forget, self.cache_key_prefix + session_key)
        with suppress(Exception):  # Redis unreachable: the commit hook below tries again
            forget()
        transaction.on_commit(forget, using=self._using(), robust=True)

    # The async doors of SessionBase, through the same rules.
    async def aload(self):
        return await sync_to_async(self.load)()

    async def asave(self, must_create=False):
        await sync_to_async(self.save)(must_create)

    async def aexists(self, session_key):
        return await sync_to_async(self.exists)(session_key)

    async def adelete(self, session_key=None):
        await sync_to_async(self.delete)(session_key)
