"""Accuracy of submission.csv against the held-out labels in $STSC_PRIVATE_DIR/answers.csv."""

import argparse
import csv
import json
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--submission_file", default="submission.csv")
args = parser.parse_args()
private = os.environ.get("STSC_PRIVATE_DIR")
if not private:
    sys.exit("STSC_PRIVATE_DIR is not set: run this through the sandbox's evaluate step")
with open(os.path.join(private, "answers.csv")) as f:
    answers = {row["id"]: row["label"] for row in csv.DictReader(f)}
with open(args.submission_file) as f:
    submitted = {row["id"]: row["label"] for row in csv.DictReader(f)}
correct = sum(submitted.get(key) == label for key, label in answers.items())
print(json.dumps({"accuracy": correct / len(answers)}))
