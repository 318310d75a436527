package sparkcnn;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.TableIdentifier;
import org.apache.spark.sql.catalyst.catalog.SessionCatalog;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.parser.ParameterContext;
import org.apache.spark.sql.catalyst.parser.ParseException;
import org.apache.spark.sql.catalyst.parser.ParserInterface;
import org.apache.spark.sql.catalyst.parser.SqlStatementSplitResult;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.StructType;

/** Spark's parser, refusing what `Policy` refuses. With spark.sparkcnn.sessionViews, each session also
 *  gets a temporary view per global temporary view (the run's views) before each statement, unless it
 *  has one of that name of its own: `SELECT * FROM global_temp.name`, so it follows the run as it grows. */
public final class GuardedParser implements ParserInterface {
    static final String SESSION_VIEWS = "spark.sparkcnn.sessionViews";
    static final ThreadLocal<Boolean> COPYING = ThreadLocal.withInitial(() -> false);
    private final SparkSession session;
    private final ParserInterface parser;

    public GuardedParser(SparkSession session, ParserInterface parser) {
        this.session = session;
        this.parser = parser;
    }

    LogicalPlan guarded(LogicalPlan plan) {
        String refused = Policy.refusal(plan);
        if (refused != null) {
            throw new SecurityException(Policy.message(refused));
        }
        if (!COPYING.get() && session.sparkContext().getConf().getBoolean(SESSION_VIEWS, false)) {
            copyViews();
        }
        return plan;
    }

    void copyViews() {
        SessionCatalog catalog = session.sessionState().catalog();
        scala.collection.Iterator<String> names = catalog.globalTempViewManager().listViewNames("*").iterator();
        COPYING.set(true);
        try {
            while (names.hasNext()) {
                String name = names.next();
                if (catalog.getTempView(name).isEmpty()) {
                    session.sql("CREATE TEMPORARY VIEW `" + name + "` AS SELECT * FROM global_temp.`" + name + "`");
                }
            }
        } finally {
            COPYING.set(false);
        }
    }

    @Override
    public LogicalPlan parsePlan(String text) throws ParseException {
        return guarded(parser.parsePlan(text));
    }

    @Override
    public LogicalPlan parsePlanWithParameters(String text, ParameterContext context) throws ParseException {
        return guarded(parser.parsePlanWithParameters(text, context));
    }

    @Override
    public LogicalPlan parseQuery(String text) throws ParseException {
        return guarded(parser.parseQuery(text));
    }

    @Override
    public Expression parseExpression(String text) throws ParseException {
        return parser.parseExpression(text);
    }

    @Override
    public TableIdentifier parseTableIdentifier(String text) throws ParseException {
        return parser.parseTableIdentifier(text);
    }

    @Override
    public FunctionIdentifier parseFunctionIdentifier(String text) throws ParseException {
        return parser.parseFunctionIdentifier(text);
    }

    @Override
    public scala.collection.immutable.Seq<String> parseMultipartIdentifier(String text) throws ParseException {
        return parser.parseMultipartIdentifier(text);
    }

    @Override
    public StructType parseRoutineParam(String text) throws ParseException {
        return parser.parseRoutineParam(text);
    }

    @Override
    public SqlStatementSplitResult splitStatements(String text) {
        return parser.splitStatements(text);
    }

    @Override
    public StructType parseTableSchema(String text) throws ParseException {
        return parser.parseTableSchema(text);
    }

    @Override
    public DataType parseDataType(String text) throws ParseException {
        return parser.parseDataType(text);
    }
}
