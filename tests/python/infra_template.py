"""Reads infra/cartflow.yaml (CloudFormation short tags kept as {"!Tag": value}) and prints, as
JSON, what the tests compare with the rest of the repository: the DataBrew recipe steps (keys
in the API's camelCase, as glue-scripts/databrew/*.json writes them) and the names of the
Glue crawlers, Glue job and DataBrew job for EnvName=ecommerce, and the scheduled task's
environment.

    python infra_template.py infra/cartflow.yaml
"""

import json
import sys

import yaml


class Loader(yaml.SafeLoader):
    pass


def tagged(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"!" + suffix: value}


Loader.add_multi_constructor("!", tagged)


def name(v, env="ecommerce"):
    if isinstance(v, dict) and "!Sub" in v:
        return v["!Sub"].replace("${EnvName}", env)
    return v


def main():
    t = yaml.load(open(sys.argv[1]), Loader=Loader)
    res = t["Resources"]
    by_type = lambda ty: [r["Properties"] for r in res.values() if r["Type"] == ty]  # noqa: E731
    steps = []
    for s in by_type("AWS::DataBrew::Recipe")[0]["Steps"]:
        step = {"Action": {"Operation": s["Action"]["Operation"], "Parameters": camel_params(s["Action"]["Parameters"])}}
        if "ConditionExpressions" in s:
            step["ConditionExpressions"] = s["ConditionExpressions"]
        steps.append(step)
    print(json.dumps({
        "recipe": steps,
        "crawlers": sorted(name(c["Name"]) for c in by_type("AWS::Glue::Crawler")),
        "glue_jobs": sorted(name(j["Name"]) for j in by_type("AWS::Glue::Job")),
        "databrew_jobs": sorted(name(j["Name"]) for j in by_type("AWS::DataBrew::Job")),
        "databrew_dataset": [{
            "key": d["Input"]["S3InputDefinition"]["Key"],
            "format": d.get("Format"),
            "path_parameters": {
                p["PathParameterName"]: p["DatasetParameter"] for p in d.get("PathOptions", {}).get("Parameters", [])
            },
        } for d in by_type("AWS::DataBrew::Dataset")],
        "databrew_outputs": [{"key": o["Location"]["Key"], "partition_columns": o.get("PartitionColumns", [])}
                             for j in by_type("AWS::DataBrew::Job") for o in j.get("Outputs", [])],
        "runner_env": {
            e["Name"]: e["Value"]
            for c in by_type("AWS::ECS::TaskDefinition")[0]["ContainerDefinitions"]
            for e in c.get("Environment", [])
        },
    }, sort_keys=True))


def camel_params(p):
    return {k[:1].lower() + k[1:]: v for k, v in p.items()}


if __name__ == "__main__":
    main()
