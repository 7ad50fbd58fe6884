"""How well can AIA's utility network verify faces at all? Trains only a Siamese network on one fixed
autoencoder's reconstructions of LFW's train split and scores verification on the test split's people.

Usage: python benchmarks/utility_network_probe.py --name NAME [--widths 4,8,8] [--hidden 500]
       [--faces-per-identity 0] [--epochs 10] [--model models/anonymizer-lfw-original]

The autoencoder is frozen, so this isolates the verifier: the network of the paper (4/8/8 channels, FC 500)
against a wider one, with plain shuffled batches against batches of K faces per person
(``train.faces_per_identity``). Same loss as AIA (contrastive, eq. 7, with shifted-mirror positives), same
verification pairs and scoring as ``conceal audit`` (identity-disjoint halves of the test people, threshold
on one half, accuracy on the other). Prints one line per epoch; one thread; seeded.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from conceal.audit.anonymizer import _verification
from conceal.data import default_crop, open_dataset
from conceal.methods import load_api
from conceal.methods.anonymizer import SiameseNet, contrastive_loss, shifted_mirror
from conceal.train.loop import epoch_order


def reconstructions(api, images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> the autoencoder's gray reconstructions (N, 1, H, W) in [0, 1]."""
    return torch.from_numpy(api.apply(images)[..., :1]).permute(0, 3, 1, 2).float() / 255


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="label of the printed lines")
    p.add_argument("--widths", default="4,8,8", help="conv widths of the Siamese network")
    p.add_argument("--hidden", type=int, default=500, help="units of its FC layer")
    p.add_argument("--faces-per-identity", type=int, default=0, help="K faces per person in a batch (0: plain shuffling)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--model", default="models/anonymizer-lfw-original", help="the frozen autoencoder")
    p.add_argument("--root", default="../shared/datasets/lfw")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    torch.manual_seed(0)
    arrays = open_dataset("lfw", args.root).arrays(64, default_crop("lfw"), progress=False)
    train, test = arrays.subset("train"), arrays.subset("test")
    api = load_api(args.model)
    x_train, x_test = reconstructions(api, train.images), reconstructions(api, test.images)
    net = SiameseNet(64, tuple(int(w) for w in args.widths.split(",")), args.hidden, 128)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    identity = torch.from_numpy(train.identity)
    start = time.time()
    for epoch in range(args.epochs):
        order = epoch_order(train, 0, epoch, args.faces_per_identity)
        for b in range(len(order) // 64):
            rows = np.sort(order[b * 64 : (b + 1) * 64])
            x = x_train[rows]
            embeddings = net(torch.cat([x, shifted_mirror(x, 2)]))  # (2B, 128)
            loss, _ = contrastive_loss(*embeddings.chunk(2), identity[rows], margin=2.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            net.eval()
            test_embeddings = torch.cat([net(x_test[i : i + 256]) for i in range(0, len(x_test), 256)]).numpy()
            net.train()
        scores = _verification({"model": {"siamese": test_embeddings}}, test.identity, 1000, 0)["model"]["siamese"]
        print(f"{args.name} epoch {epoch + 1} ({(time.time() - start) / 60:.1f} min): verification accuracy "
              f"{scores['accuracy']:.3f}, AUC {scores['auc']:.3f}", flush=True)


if __name__ == "__main__":
    main()
