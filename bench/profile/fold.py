# Folds `perf script -F comm,tid,ip,sym` output (DWARF call graphs) by function, by crate, and by the
# innermost named library on each stack; see bench/README.md, "Where the CPU goes".
import re,sys,collections
samples=[]; cur=None
for line in open(sys.argv[1], errors='replace'):
    if not line.strip():
        if cur is not None: samples.append(cur); cur=None
        continue
    if not line.startswith(('\t',' ')):
        cur=[]; continue
    parts=line.strip().split(None,1)
    sym=parts[1] if len(parts)>1 else '[unknown]'
    sym=re.sub(r'\s*\(inlined\)$','',sym)
    sym=re.sub(r'\+0x[0-9a-f]+$','',sym)
    cur.append(sym)
if cur: samples.append(cur)
N=len(samples)
def group(sym, kernel):
    s=sym
    if kernel: return 'kernel'
    for pre,g in [('bonny_e2e','bonny-rs (ours)'),('bonny::','bonny-rs (ours)'),('<bonny','bonny-rs (ours)'),('bonny_widget','bonny-rs (ours)'),
                  ('kube_runtime','kube-runtime'),('<kube_runtime','kube-runtime'),('kube_client','kube-client'),('<kube_client','kube-client'),('kube_core','kube-core'),('<kube_core','kube-core'),
                  ('k8s_openapi','k8s-openapi'),('<k8s_openapi','k8s-openapi'),('serde_json','serde_json'),('<serde_json','serde_json'),('serde','serde'),('<serde','serde'),
                  ('rustls','rustls/ring (TLS)'),('<rustls','rustls/ring (TLS)'),('ring','rustls/ring (TLS)'),('<ring','rustls/ring (TLS)'),('tokio_rustls','rustls/ring (TLS)'),('<tokio_rustls','rustls/ring (TLS)'),
                  ('hyper','hyper/h2/http'),('<hyper','hyper/h2/http'),('h2::','hyper/h2/http'),('<h2','hyper/h2/http'),('http','hyper/h2/http'),('<http','hyper/h2/http'),('tower','hyper/h2/http'),('<tower','hyper/h2/http'),
                  ('tokio','tokio'),('<tokio','tokio'),
                  ('_int_malloc','allocator (glibc malloc/free)'),('malloc','allocator (glibc malloc/free)'),('_int_free','allocator (glibc malloc/free)'),('cfree','allocator (glibc malloc/free)'),('free','allocator (glibc malloc/free)'),('realloc','allocator (glibc malloc/free)'),('_int_realloc','allocator (glibc malloc/free)'),('malloc_consolidate','allocator (glibc malloc/free)'),('unlink_chunk','allocator (glibc malloc/free)'),
                  ('__mem','libc mem*'),('alloc::','alloc/core (std)'),('<alloc','alloc/core (std)'),('core::','alloc/core (std)'),('<core','alloc/core (std)'),('std::','alloc/core (std)'),('<std','alloc/core (std)'),
                  ('tracing','tracing'),('<tracing','tracing'),('futures','futures'),('<futures','futures')]:
        if s.startswith(pre): return g
    return 'other: '+s[:60]
def is_kernel(frame_line_sym, addr=None): return False
# kernel frames: detect by known kernel names isn't reliable; re-parse addresses
samples2=[]; cur=None
for line in open(sys.argv[1], errors='replace'):
    if not line.strip():
        if cur is not None: samples2.append(cur); cur=None
        continue
    if not line.startswith(('\t',' ')):
        cur=[]; continue
    parts=line.strip().split(None,1)
    addr=parts[0]; sym=parts[1] if len(parts)>1 else '[unknown]'
    sym=re.sub(r'\s*\(inlined\)$','',sym)
    cur.append((sym, addr.startswith('ffffffff8')))
if cur: samples2.append(cur)
N=len(samples2)
selfc=collections.Counter(); selfg=collections.Counter(); incl=collections.Counter(); inclg=collections.Counter(); leafg_user=collections.Counter()
for st in samples2:
    if not st: continue
    top=st[0]
    selfc[(top[0] if not top[1] else 'kernel: '+top[0])]+=1
    # first user-space frame group for kernel samples
    gtop=group(top[0], top[1])
    selfg[gtop]+=1
    seen=set(); seeng=set()
    for sym,k in st:
        if sym not in seen: seen.add(sym); incl[sym]+=1
        g=group(sym,k)
        if g not in seeng: seeng.add(g); inclg[g]+=1
    # the innermost "owner" frame that is a library we name (ours/kube/k8s/serde_json)
pct=lambda c: f"{100*c/N:5.1f}%"
print(f"{N} samples")
print("\n## self time by function (top 30)")
for s,c in selfc.most_common(30): print(pct(c), s[:150])
print("\n## self time by crate/group")
for s,c in selfg.most_common(25): print(pct(c), s)
print("\n## inclusive by group (a sample counts once per group on its stack; stacks truncated at 8 KiB)")
for s,c in inclg.most_common(25): print(pct(c), s)
print("\n## inclusive by function (top 60)")
for s,c in incl.most_common(60): print(pct(c), s[:170])

OWNERS=['bonny-rs (ours)','kube-runtime','kube-client','kube-core','k8s-openapi','serde_json','rustls/ring (TLS)','hyper/h2/http','tokio']
def grp2(sym,k):
    if sym.startswith(('hashbrown','<hashbrown')): return 'hashbrown'
    if sym.startswith(('__GI___libc','tcache','_int_','malloc','unlink_chunk','cfree')): return 'allocator (glibc malloc/free)'
    return group(sym,k)
owner=collections.Counter(); owner_fn=collections.Counter()
for st in samples2:
    o=None
    for sym,k in st:
        g=grp2(sym,k)
        if g in OWNERS: o=(g,sym); break
    if o is None:
        o=('unattributed (stack truncated or runtime/kernel only)', st[0][0] if st else '')
    owner[o[0]]+=1; owner_fn[o]+=1
print("\n## owner: each sample charged to the innermost frame of a named library (allocation, hashing, memcpy charged to their caller)")
for s,c in owner.most_common(): print(pct(c), s)
print("\n## owner function (top 40)")
for (g,s),c in owner_fn.most_common(40): print(pct(c), g, '|', s[:150])
def callers(name):
    c=collections.Counter()
    for st in samples2:
        for i,(sym,k) in enumerate(st):
            if name in sym:
                nxt=[s for s,_ in st[i+1:i+6] if name not in s]
                c[' <- '.join(x[:80] for x in nxt[:3])]+=1; break
    return c
for name in ['HashMap<K,V,S,A>::retain','Written<K>::finalized','malloc_consolidate']:
    print(f"\n## callers of {name}")
    for s,c in callers(name).most_common(6): print(pct(c), s)
def first_named(name, want=('bonny','kube_runtime','kube_client','kube_core')):
    c=collections.Counter()
    for st in samples2:
        idx=[i for i,(s,_) in enumerate(st) if name in s]
        if not idx: continue
        for s,_ in st[idx[0]+1:]:
            if s.startswith(want) or any(s.startswith('<'+w) for w in want):
                c[s[:140]]+=1; break
        else: c['(none named)']+=1
    return c
for name in ['ManagedFieldsEntry as serde_core::ser::Serialize','serde_json::value::ser','serde_json::de::from_str','apply_watcher_event','ObjectMeta as core::clone::Clone','take_received_plaintext']:
    print(f"\n## nearest bonny/kube frame above {name}")
    for s,c in first_named(name).most_common(5): print(pct(c), s)
