package sparkcnn;

import java.util.Arrays;
import java.util.HashSet;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

import org.apache.spark.sql.catalyst.analysis.UnresolvedFunction;
import org.apache.spark.sql.catalyst.analysis.UnresolvedIdentifier;
import org.apache.spark.sql.catalyst.analysis.UnresolvedRelation;
import org.apache.spark.sql.catalyst.expressions.PlanExpression;
import org.apache.spark.sql.catalyst.plans.QueryPlan;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.trees.TreeNode;
import org.apache.spark.sql.execution.command.CreateViewCommand;
import org.apache.spark.sql.execution.command.DescribeQueryCommand;
import org.apache.spark.sql.execution.command.ExplainCommand;
import org.apache.spark.sql.execution.command.SetCommand;

/** Which parsed statements a query on a run may run: an allow-list of plan nodes (reads, temporary views,
 *  session settings, listings); anything else is refused, named by its kind. */
public final class Policy {
    static final Set<String> ALLOWED = new HashSet<>(Arrays.asList(
        "Project", "Filter", "Aggregate", "Join", "LateralJoin", "Sort", "GlobalLimit", "LocalLimit", "Limit",
        "Offset", "Tail", "Union", "Except", "Intersect", "Distinct", "Deduplicate", "SubqueryAlias",
        "UnresolvedWith", "WithCTE", "CTERelationDef", "CTERelationRef", "UnresolvedRelation", "OneRowRelation",
        "LocalRelation", "UnresolvedInlineTable", "Range", "Window", "Generate", "Expand", "Sample", "Pivot",
        "Unpivot", "UnresolvedHint", "ResolvedHint", "Repartition", "RepartitionByExpression",
        "RebalancePartitions", "UnresolvedSubqueryColumnAliases", "UnresolvedTableValuedFunction",
        "UnresolvedTVFAliases", "UnresolvedHaving", "UnresolvedNamespace", "CurrentNamespace", "View",
        "ShowViews", "ShowTables", "ShowTablesExtended", "ShowColumns", "DescribeRelation", "DescribeColumn",
        "DescribeFunction", "ShowFunctions", "ShowNamespaces", "ShowCurrentNamespaceCommand", "UnresolvedTableOrView",
        "UnresolvedFunctionName", "SetCommand", "ResetCommand", "ExplainCommand", "DescribeQueryCommand",
        "CreateViewCommand", "DropView", "CurrentNamespace", "ShowNamespacesCommand", "ShowCreateTable",
        "ShowTableProperties", "CreateVariable", "SetVariable", "DropVariable", "UnresolvedIdentifier",
        "SetCatalogAndNamespace"));
    static final Map<String, String> KINDS = Map.of(
        "InsertIntoStatement", "INSERT", "InsertIntoDir", "INSERT OVERWRITE DIRECTORY",
        "UnresolvedExecuteImmediate", "EXECUTE IMMEDIATE", "CreateNamespace", "CREATE DATABASE",
        "DropNamespace", "DROP DATABASE", "CreateSQLFunctionCommand", "CREATE FUNCTION",
        "ScriptTransformation", "TRANSFORM ... USING (a script)", "CreateTableAsSelect", "CREATE TABLE ... AS SELECT",
        "CompoundBody", "BEGIN ... END (a SQL script)", "AddColumns", "ALTER TABLE ADD COLUMNS");
    static final Set<String> FUNCTIONS = new HashSet<>(Arrays.asList("reflect", "java_method", "try_reflect"));
    static final Set<String> SETTINGS = new HashSet<>(Arrays.asList(
        "spark.sql.variable.substitute", "spark.sql.runsqlonfiles"));
    static final Set<String> DATABASES = new HashSet<>(Arrays.asList("default", "global_temp"));

    /** Null when a parsed statement only reads or changes the session's own state; else what it is. */
    public static String refusal(LogicalPlan plan) {
        return visit(plan);
    }

    /** The line a refused statement of a kind is answered with. */
    public static String message(String kind) {
        return kind + " is refused: queries on a sparkcnn run are read-only (SELECT, SHOW, DESCRIBE, EXPLAIN, "
            + "temporary views and SET are allowed)";
    }

    /** `refusal`, for callers that reach the class through an object (Python, over py4j). */
    public String check(LogicalPlan plan) {
        return refusal(plan);
    }

    static String visit(TreeNode<?> node) {
        String found = node instanceof LogicalPlan ? statement((LogicalPlan) node) : expression(node);
        if (found != null || node.getClass().getSimpleName().equals("DropView")) {
            return found;
        }
        if (node instanceof QueryPlan) {
            found = first(((QueryPlan<?>) node).expressions().iterator());
        }
        if (found == null) {
            found = first(node.children().iterator());
        }
        return found != null ? found : first(node.innerChildren().iterator());
    }

    static String first(scala.collection.Iterator<?> nodes) {
        while (nodes.hasNext()) {
            String found = visit((TreeNode<?>) nodes.next());
            if (found != null) {
                return found;
            }
        }
        return null;
    }

    static String statement(LogicalPlan plan) {
        String name = plan.getClass().getSimpleName().replace("$", "");
        if (!ALLOWED.contains(name)) {
            return kind(name);
        }
        if (plan instanceof UnresolvedRelation) {
            return relation(((UnresolvedRelation) plan).multipartIdentifier());
        }
        if (plan instanceof CreateViewCommand
                && !((CreateViewCommand) plan).viewType().toString().equals("LocalTempView")) {
            return "CREATE GLOBAL TEMPORARY VIEW";
        }
        if (plan instanceof SetCommand && ((SetCommand) plan).kv().isDefined()
                && SETTINGS.contains(((SetCommand) plan).kv().get()._1().trim().toLowerCase(Locale.ROOT))
                && ((SetCommand) plan).kv().get()._2().isDefined()) {
            return "SET " + ((SetCommand) plan).kv().get()._1().trim();
        }
        if (name.equals("DropView")) {
            return dropView(plan);
        }
        if (plan instanceof ExplainCommand) {
            return visit(((ExplainCommand) plan).logicalPlan());
        }
        if (plan instanceof DescribeQueryCommand) {
            return visit(((DescribeQueryCommand) plan).plan());
        }
        return null;
    }

    /** A table name, not a path (parquet.`/x`) nor another catalog's table. */
    static String relation(scala.collection.immutable.Seq<String> parts) {
        int n = parts.size();
        boolean named = n == 1 || (n == 2 && DATABASES.contains(parts.apply(0).toLowerCase(Locale.ROOT)))
            || (n == 3 && parts.apply(0).equalsIgnoreCase("spark_catalog")
                && DATABASES.contains(parts.apply(1).toLowerCase(Locale.ROOT)));
        return named ? null : "a read of a path or another catalog (" + parts.mkString(".") + ")";
    }

    /** DROP VIEW of a session's own temporary view (one-part name) only. */
    static String dropView(LogicalPlan plan) {
        LogicalPlan child = plan.children().apply(0);
        boolean own = child instanceof UnresolvedIdentifier && ((UnresolvedIdentifier) child).nameParts().size() == 1;
        return own ? null : "DROP VIEW";
    }

    static String expression(TreeNode<?> node) {
        if (node instanceof UnresolvedFunction) {
            String name = ((UnresolvedFunction) node).nameParts().last().toLowerCase(Locale.ROOT);
            if (FUNCTIONS.contains(name)) {
                return "a call of " + name;
            }
        }
        if (node instanceof PlanExpression) {
            return visit((TreeNode<?>) ((PlanExpression<?>) node).plan());
        }
        return null;
    }

    /** AddJarsCommand -> ADD JARS, CacheTable -> CACHE TABLE. */
    static String kind(String className) {
        if (KINDS.containsKey(className)) {
            return KINDS.get(className);
        }
        String name = className.replaceAll("^Unresolved|(Command|Statement|Exec)$", "");
        return name.replaceAll("([a-z0-9])([A-Z])", "$1 $2").toUpperCase(Locale.ROOT);
    }
}
