"""Baseline: predict class 1 when feature x1 is positive (a one-feature rule, no training)."""

import csv

with open("data/test.csv") as f:
    rows = list(csv.DictReader(f))
with open("submission.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "label"])
    for row in rows:
        writer.writerow([row["id"], int(float(row["x1"]) > 0)])
