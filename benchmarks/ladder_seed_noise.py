"""Seed-to-seed noise of a ladder, and log_bilinear's held-out errors on each seed, on both, and on their mean.

    gunzip -k benchmarks/records/realtext_ladder_corpus1.jsonl.gz benchmarks/records/realtext_ladder_corpus1_seed1.jsonl.gz
    python benchmarks/ladder_seed_noise.py benchmarks/records/realtext_ladder_corpus1.jsonl \
        benchmarks/records/realtext_ladder_corpus1_seed1.jsonl

The two files are the same grid with train seed 0 and 1 (`seed=1 sweep_name=...`); rows are matched by
(N, D, D', expert domain, eval domain).
"""
import sys

import numpy as np
import pandas as pd

from analysis.io import load_results, select_rows, budget_of
from analysis.laws import LAWS
from analysis.validate import heldout
pd.set_option('display.width', 250)
s0 = select_rows(load_results(sys.argv[1])); s1 = select_rows(load_results(sys.argv[2]))
k = ['n_params','pretrain_tokens','special_tokens','expert_domain','eval_domain']
m = s0.merge(s1, on=k, suffixes=('_0','_1'))
print('matched rows', len(m), 'of', len(s0), len(s1))
m['rel'] = (m.eval_loss_1 - m.eval_loss_0) / (0.5*(m.eval_loss_1 + m.eval_loss_0))
m['C'] = budget_of(m.rename(columns={'budget_tokens_0':'budget_tokens','accounting_0':'accounting','n_experts_0':'n_experts'}))
m['tpp'] = (m.C/m.n_params).round(0)
print('seed-to-seed |diff| mean %.2f%%, median %.2f%%; per-run noise sd %.2f%%' % (
    100*m.rel.abs().mean(), 100*m.rel.abs().median(), 100*m.rel.std()/np.sqrt(2)))
print((100*m.rel.abs()).groupby([m.tpp, m.n_params]).mean().unstack().round(2).to_string())
law = LAWS['log_bilinear']
def errs(df, label, ref=None):
    res, tab = heldout(df, law, per_domain=True)
    out = {c: '%.2f%% / %.2f%%' % (100*r['mean_rel_error'], 100*r['max_rel_error']) for c, r in res.items() if 'mean_rel_error' in r}
    if ref is not None:  # errors against the two-seed mean of each held-out row
        t = tab.merge(ref, on=k)
        e = (t.predicted_loss - t.mean_loss).abs() / t.mean_loss
        out['vs 2-seed mean'] = {c: '%.2f%% / %.2f%%' % (100*g.mean(), 100*g.max()) for c, g in e.groupby(t.check)}
    print(label, out)
mean = m[k].assign(mean_loss=0.5*(m.eval_loss_0 + m.eval_loss_1))
errs(s0, 'seed 0')
errs(s1, 'seed 1')
both = pd.concat([s0, s1], ignore_index=True); both.attrs.update(s0.attrs)
errs(both, 'both seeds (fitted together)', mean)
avg = s0.merge(mean, on=k); avg['eval_loss'] = avg['mean_loss']; avg = avg.drop(columns='mean_loss'); avg.attrs.update(s0.attrs)
errs(avg, 'the 2-seed mean as rows')
