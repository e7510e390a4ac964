"""The driver's side of `vmr extract --engine ray` (ray_engine.py): the encoder actors and the
two scheduling loops (text units; video/image decode groups packed into encoder batches), with
their retries and the saving of results to the progress directory."""

from __future__ import annotations

import collections
import time

from vmr.errors import VmrError
from vmr.extract.ray_workers import EncoderActor, decode_group

RETRIES = 3  # Ray's retries per task / actor call, and the driver's resubmissions per batch
IN_FLIGHT = 2  # encoder calls queued per actor (one running, one ready to start)
RETIRED = 1 << 30  # the load of an actor taken out of the rotation
COMMIT_EVERY_S = 2.0  # finished batches are saved to the progress directory this often

class Encoders:
    """The encoder actors and how many calls each has in flight."""

    def __init__(self, ray, opts, ident):
        from vmr._version import __version__
        from vmr.fsio import one_line

        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        gpu = opts.device.startswith("cuda") or (opts.device == "auto" and gpus > 0)
        if gpu and not gpus:
            raise VmrError(f"--device {opts.device}: the Ray cluster has no GPU")
        nodes = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]
        n = gpus if gpu else (opts.ray_encoders or max(1, len(nodes)))
        cpus = int(res.get("CPU", 0))
        # each actor holds a CPU while the cluster keeps one for decoding (else it holds none)
        cpu = 1 if cpus > n or gpu else 0
        cls = ray.remote(EncoderActor)
        self.actors = [cls.options(num_cpus=cpu, num_gpus=1 if gpu else 0, max_restarts=RETRIES,
                                   max_task_retries=RETRIES, scheduling_strategy="SPREAD").remote(
            ident, opts.pooling, "cuda" if gpu else "cpu", opts.batch_size,
            opts.modality != "text") for _ in range(n)]
        try:
            infos = ray.get([a.info.remote() for a in self.actors])
        except ray.exceptions.RayError as e:  # the last line names the actor's own error
            self.close(ray)
            last = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [one_line(e)]
            raise VmrError(f"the encoder could not start on the Ray cluster: {last[-1][:300]}"
                           ) from None
        other = [i for i in infos if i["vmr"] != __version__]
        if other:
            self.close(ray)
            raise VmrError(f"a Ray node runs vmr {other[0]['vmr']}, this driver vmr "
                           f"{__version__}; install the same vmr on every node")
        self.dim, self.pixels = infos[0]["dim"], infos[0]["pixels"]
        self.load = [0] * n
        self.failures = [0] * n  # calls lost with this actor (dead beyond Ray's restarts?)
        self.describe = (f"engine ray: {len(nodes)} node(s), {n} "
                         f"{'GPU' if gpu else 'CPU'} encoder(s), {cpus} CPUs")

    def free(self) -> int | None:
        """The least loaded actor with room for another call, or None."""
        k = min(range(len(self.load)), key=self.load.__getitem__)
        return k if self.load[k] < IN_FLIGHT else None

    def lost(self, k: int) -> None:
        """A call to actor k failed (its process or node died): after RETRIES such failures the
        actor is taken out of the rotation (Ray could not bring it back)."""
        self.failures[k] += 1
        if self.failures[k] >= RETRIES:
            self.load[k] = RETIRED
            if all(x >= RETIRED for x in self.load):
                raise VmrError("every encoder actor on the Ray cluster died; rerun the same "
                               "command to resume")

    def close(self, ray) -> None:
        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # already gone
                pass


class _Job:
    """Encoder calls in flight, their retries, and committing results (shared by both kinds)."""

    def __init__(self, ray, opts, items, progress, bar, stats, enc: Encoders):
        self.ray, self.opts, self.ids = ray, opts, items.ids
        self.progress, self.bar, self.stats, self.enc = progress, bar, stats, enc
        self.calls: dict = {}  # result ref -> (actor, what, attempt)
        self.resubmitted = 0
        self.held: list = [[], [], [], [], 0]  # ids, vector blocks, fail ids, reasons, frames
        self.saved = time.monotonic()

    def _call(self, what, attempt: int = 0) -> None:
        k = self.enc.free()
        ref = self._remote(self.enc.actors[k], what)
        self.enc.load[k] += 1
        self.calls[ref] = (k, what, attempt)

    def _result(self, ref):
        """The call's (features, seconds), or None after resubmitting a call that failed."""
        k, what, attempt = self.calls.pop(ref)
        if self.enc.load[k] < RETIRED:
            self.enc.load[k] -= 1
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:  # the call itself raised: not retried
            cause = getattr(e, "cause", None)
            if isinstance(cause, VmrError):
                raise VmrError(str(cause)) from None
            raise
        except self.ray.exceptions.RayError as e:  # a dead actor, node or object
            if attempt >= RETRIES:
                raise VmrError(f"an encoder batch failed {attempt + 1} times on the Ray cluster "
                               f"({type(e).__name__}); rerun the same command to resume"
                               ) from None
            self.resubmitted += 1
            self.enc.lost(k)
            self.pending_retry.append((what, attempt + 1))
            return None

    def commit(self, ok_ids, vecs, fail_ids, reasons, frames: int, done: int) -> None:
        """Results are saved every COMMIT_EVERY_S seconds (a cluster finishes many batches a
        second: one progress file per batch would be millions for a large catalogue)."""
        import numpy as np

        if len(ok_ids):
            self.held[0].extend(ok_ids)
            self.held[1].append(np.asarray(vecs, np.float32))
        self.held[2].extend(fail_ids)
        self.held[3].extend(reasons)
        self.held[4] += frames
        self.stats.items += len(ok_ids)
        self.stats.failed += len(fail_ids)
        self.bar.update(done)
        if time.monotonic() - self.saved >= COMMIT_EVERY_S:
            self.flush()

    def flush(self) -> None:
        """Save what is held (called at the end, also after an interruption: held results are
        complete, so nothing done is lost)."""
        import numpy as np

        ids, vecs, fails, reasons, frames = self.held
        self.held, self.saved = [[], [], [], [], 0], time.monotonic()
        if ids or fails:
            feats = np.concatenate(vecs) if vecs else np.zeros((0, self.enc.dim), np.float32)
            self.progress.commit(ids, feats, fails, reasons, frames=frames)

    def wait(self, refs: list) -> list:
        if not refs:
            return []
        done, _ = self.ray.wait(refs, num_returns=1, timeout=1.0)
        return done


class TextJob(_Job):
    def run(self, texts: list, todo: list) -> None:
        import numpy as np

        from vmr.extract.finite import check_finite

        self.pending_retry = collections.deque()
        units = collections.deque()
        for unit in todo:
            good = [r for r in unit if (texts[r] or "").strip()]
            empty = [r for r in unit if not (texts[r] or "").strip()]
            if good:
                units.append((good, empty))
            else:
                self.commit([], np.zeros((0, 0), np.float32), [self.ids[r] for r in empty],
                            ["empty text"] * len(empty), 0, len(empty))
        self.texts = texts
        while units or self.calls or self.pending_retry:
            while self.enc.free() is not None and (self.pending_retry or units):
                what, attempt = (self.pending_retry.popleft() if self.pending_retry
                                 else (units.popleft(), 0))
                self._call(what, attempt)
            for ref in self.wait(list(self.calls)):
                what = self.calls[ref][1]
                out = self._result(ref)
                if out is None:
                    continue
                feats, secs = out
                good, empty = what
                self.stats.encoder_s += secs
                self.stats.frames += len(good)
                ok, feats, bad = check_finite(feats, [self.ids[r] for r in good], "text",
                                              self.opts.dtype)
                self.commit(ok, feats, [self.ids[r] for r in empty] + bad,
                            ["empty text"] * len(empty)
                            + ["encoder returned non-finite values"] * len(bad),
                            0, len(good) + len(empty))

    def _remote(self, actor, what):
        return actor.encode_texts.remote([self.texts[r] for r in what[0]])


class VisualJob(_Job):
    """Decode groups -> frames queued in decode order -> encoder batches of --batch-size."""

    def run(self, paths: list, rows: list, make_task) -> None:
        self.pending_retry = collections.deque()
        self.B = B = self.opts.batch_size
        per = max(1, min(16, -(-B // self.opts.max_frames))) if self.opts.modality == "video" \
            else max(1, min(64, B))
        self.groups = collections.deque(
            [(r, make_task(paths[r])) for r in rows[k:k + per]] for k in range(0, len(rows), per))
        self.decoding: dict = {}  # meta ref -> (group, frames ref)
        self.ready: collections.deque = collections.deque()  # (key, index, row, first, n)
        self.buffered = 0  # frames decoded, not yet sent to an encoder
        self.refs: dict = {}  # key -> [frames ref, frames not yet encoded]
        self.rows: dict = {}  # row -> [frames, {first frame: features}]
        self.next_key = 0
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        max_decoding, max_buffer = 2 * cpus + 2, 4 * B * len(self.enc.actors)
        while self.groups or self.decoding or self.calls or self.buffered or self.pending_retry:
            while self.groups and len(self.decoding) < max_decoding \
                    and self.buffered < max_buffer:
                self._decode(self.groups.popleft())
            self._send_batches()
            for ref in self.wait(list(self.decoding) + list(self.calls)):
                if ref in self.decoding:
                    self._decoded(ref)
                else:
                    self._encoded(ref)

    def _decode(self, group) -> None:
        if not hasattr(self, "_decode_fn"):
            self._decode_fn = self.ray.remote(decode_group).options(
                num_cpus=1, num_returns=2, max_retries=RETRIES)
        meta, frames = self._decode_fn.remote(group, self.opts.timeout)
        self.decoding[meta] = (group, frames)

    def _send_batches(self) -> None:
        while self.enc.free() is not None:
            if self.pending_retry:
                self._call(*self.pending_retry.popleft())
                continue
            flush = not self.groups and not self.decoding
            if not (self.buffered >= self.B or (flush and self.buffered > 0)):
                return
            spec, take = [], 0
            while self.ready and take < self.B:
                key, idx, row, a, n = self.ready[0]
                k = min(self.B - take, n - a)
                spec.append((key, idx, row, a, a + k))
                if a + k == n:
                    self.ready.popleft()
                else:
                    self.ready[0] = (key, idx, row, a + k, n)
                take += k
            self.buffered -= take
            self._call(spec)

    def _remote(self, actor, spec):
        keys = sorted({s[0] for s in spec})
        pos = {k: j for j, k in enumerate(keys)}
        args = [(pos[key], idx, a, b) for key, idx, _, a, b in spec]
        return actor.encode_frames.remote(args, self.B, *[self.refs[k][0] for k in keys])

    def _decoded(self, ref) -> None:
        import numpy as np

        group, frames = self.decoding.pop(ref)
        try:
            meta = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError:
            raise
        except self.ray.exceptions.RayError as e:  # its worker died RETRIES + 1 times
            if len(group) > 1:  # find the item that kills it: one by one
                self.groups.extendleft([g] for g in reversed(group))
                return
            meta = [(group[0][0], False, f"decoder process died or hung past "
                     f"{self.opts.timeout:g} s ({type(e).__name__} on the Ray cluster)")]
        key, self.next_key = self.next_key, self.next_key + 1
        total = sum(n for _, ok, n in meta if ok)
        if total:
            self.refs[key] = [frames, total]
        fails = []
        for idx, (row, ok, payload) in enumerate(meta):
            if ok:
                self.rows[row] = [payload, {}]
                self.ready.append((key, idx, row, 0, payload))
                self.buffered += payload
            else:
                fails.append((self.ids[row], payload))
        if fails:
            self.commit([], np.zeros((0, 0), np.float32), [i for i, _ in fails],
                        [r for _, r in fails], 0, len(fails))

    def _encoded(self, ref) -> None:
        import numpy as np

        from vmr.extract.finite import check_finite

        spec = self.calls[ref][1]
        out = self._result(ref)
        if out is None:
            return
        feats, secs = out
        done, at = [], 0
        for key, _, row, a, b in spec:
            entry = self.rows[row]
            entry[1][a] = feats[at:at + b - a]
            at += b - a
            if sum(len(c) for c in entry[1].values()) == entry[0]:
                done.append(row)
            self.refs[key][1] -= b - a
            if self.refs[key][1] == 0:
                del self.refs[key]  # the pixels leave the object store
        self.stats.encoder_s += secs
        self.stats.frames += at
        vecs = [np.concatenate([c for _, c in sorted(self.rows.pop(r)[1].items())]).mean(
            axis=0, dtype=np.float64) for r in done]
        vecs = (np.stack(vecs).astype(np.float32) if vecs
                else np.zeros((0, self.enc.dim), np.float32))
        ok, vecs, bad = check_finite(vecs, [self.ids[r] for r in done], self.opts.modality,
                                     self.opts.dtype)
        self.commit(ok, vecs, bad, ["encoder returned non-finite values"] * len(bad), at,
                    len(done))
        elapsed = max(self.bar.format_dict.get("elapsed", 0) or 0, 1e-6)
        self.bar.set_postfix_str(f"{self.stats.frames / elapsed:.1f} frames/s", refresh=False)
