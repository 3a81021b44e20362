# prints the loss curves and throughput of several train.py out_dirs side by side (notes/multi_gpu.md)
import json, sys
def ev(d, kind):
    return [json.loads(l) for l in open(f"{d}/log.jsonl") if json.loads(l)['event'] == kind]
runs = sys.argv[1:]
tr = {d: {e['iter']: e for e in ev(d, 'train')} for d in runs}
print("iter " + " ".join(f"{d:>10s}" for d in runs))
for it in sorted(tr[runs[0]]):
    if it % 20 == 0:
        print(f"{it:4d} " + " ".join(f"{tr[d][it]['loss']:10.4f}" if it in tr[d] else f"{'-':>10s}" for d in runs))
for d in runs:
    t = [e for i, e in tr[d].items() if i >= 30]
    tok = sum(e['tokens_per_sec'] for e in t) / max(len(t), 1)
    print(d, "mean tok/s (iter>=30): %.0f" % tok, "mfu %.3f" % (t[-1]['mfu'] or 0), "peak GiB", t[-1]['peak_mem_gib'],
          "evals", [(e['iter'], round(e['val_loss'], 4)) for e in ev(d, 'eval')])
a, b = runs[1], runs[2] if len(runs) > 2 else None
if b:
    common = [i for i in tr[b] if i in tr[a]]
    print("max |loss diff|", a, b, max(abs(tr[a][i]['loss'] - tr[b][i]['loss']) for i in common), "over", len(common), "logged steps")
m = [i for i in tr[runs[0]] if i in tr[runs[1]]]
print("max |loss diff|", runs[0], runs[1], max(abs(tr[runs[0]][i]['loss'] - tr[runs[1]][i]['loss']) for i in m))
